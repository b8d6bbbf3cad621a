"""What runs inside the Voila server of ``python -m mono_utils app``: a kernel manager with a cap.

Each page load of a Voila app starts a kernel of its own (about 0.6 GB with torch, a model and
an SAE loaded). Voila 0.5 has no limit of its own, so a class of students, or a loop of
requests, could exhaust the teacher's memory. :class:`CappedKernelManager` refuses a kernel
beyond ``max_kernels`` with a page that says why (HTTP 503); jupyter_server's idle culler
(``cull_idle_timeout``, ``cull_interval``, configured on the same class by
:func:`mono_utils.apps.voila_command`) frees the kernels of closed tabs and of loads that
never connected. This module is imported by the Voila process, never by a kernel: it needs
jupyter_server and tornado, not torch.
"""
from __future__ import annotations

import contextlib
import uuid

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado.web import HTTPError
from traitlets import Integer

# the token Voila reads from its environment: a kernel inherits Voila's environment, and an
# app's kernel has no business knowing the teacher's token
SECRET_ENV = ("JUPYTER_TOKEN", "JUPYTER_TOKEN_FILE")


class CappedKernelManager(AsyncMappingKernelManager):
    """Voila's kernel manager, refusing a new kernel while ``max_kernels`` are alive or starting."""

    max_kernels = Integer(8, config=True, help="Most kernels alive at once (one per open page).")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._starting: set[str] = set()   # ids of kernels whose start has not returned yet (concurrent loads)

    def alive_or_starting(self) -> int:
        return len(set(self._kernels) | set(getattr(self, "_pending_kernels", {})) | self._starting)

    async def start_kernel(self, *args, kernel_id=None, env=None, **kwargs):
        if kernel_id is None and self.alive_or_starting() >= self.max_kernels:
            self.log.warning("refused a kernel: %d of %d are in use", self.alive_or_starting(), self.max_kernels)
            message = full_message(self.max_kernels, self.cull_idle_timeout)
            # Voila's error page shows the status line's reason, not the message: the reason is all of it
            raise HTTPError(503, "%s", message, reason=message)
        env = {k: v for k, v in (env or {}).items() if k not in SECRET_ENV}
        new_id = kernel_id or str(uuid.uuid4())   # reserved before the first await: concurrent loads see it
        self._starting.add(new_id)
        try:
            return await super().start_kernel(*args, kernel_id=new_id, env=env, **kwargs)
        finally:
            self._starting.discard(new_id)

    async def cull_kernel_if_idle(self, kernel_id):
        # a kernel shut down between the culler's listing and its check is not an error
        with contextlib.suppress(KeyError):
            await super().cull_kernel_if_idle(kernel_id)


def full_message(max_kernels: int, cull_idle_timeout: int) -> str:
    """The text of the page a student gets when the app is full."""
    freed = (f"a copy left idle for {cull_idle_timeout} s with its tab closed is freed" if cull_idle_timeout > 0
             else "copies are freed only when their tab is closed")
    return (f"The app is full: {max_kernels} copies of it are open (each holds its own model in memory). "
            f"Close the app in a tab you no longer use, or try again in a minute ({freed}). "
            f"Teacher: serve more with `python -m mono_utils app ... --max-kernels N` if memory allows.")
