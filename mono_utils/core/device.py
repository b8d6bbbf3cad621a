"""Where training runs: the device helpers shared by the model trainer, the SAE trainer and the harvest.

Training and the activation harvest use a GPU when there is one (``$MONO_DEVICE`` overrides);
everything after training runs on the CPU, so artifacts never hold GPU tensors.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch


def pick_device(device=None) -> torch.device:
    """``device``, else ``$MONO_DEVICE`` (e.g. ``cpu`` to keep a GPU free), else CUDA when present.

    A device this torch cannot use (``cuda`` without CUDA, ``tpu``, a typo) is a ``ValueError``
    that names where it came from (the argument or ``MONO_DEVICE``) and what to use instead.
    """
    source = "device" if device else "MONO_DEVICE"
    device = device or os.environ.get("MONO_DEVICE") or None
    if device is not None:
        return _check_device(device, source)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda")
    return torch.device("cpu")


def _check_device(device, source: str) -> torch.device:
    text = str(device).strip()
    fix = "unset MONO_DEVICE or set MONO_DEVICE=cpu" if source == "MONO_DEVICE" else "pass device='cpu'"
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{source}={text!r} is not a device: use cpu, cuda, cuda:N or mps ({fix})")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{source}={text} asks for a GPU, but this torch has no CUDA (torch "
                             f"{torch.__version__}{', CPU-only build' if torch.version.cuda is None else ''}, or no "
                             f"GPU visible): {fix}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{source}={text}: this machine has {torch.cuda.device_count()} GPU(s), "
                             f"numbered from 0: use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"{source}={text} asks for Apple's GPU, which this torch cannot use: {fix}")
    return dev


@contextmanager
def deterministic(device):
    """Bit-reproducible training on a GPU too, for the duration of the block.

    Some CUDA kernels (embedding and index backward passes, split-K GEMMs) add with atomics in
    no fixed order, so two runs of one config would differ; PyTorch's deterministic mode picks
    their ordered variants (warning, not failing, where an op has none). On a CPU: nothing to do.
    """
    if torch.device(device).type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # cuBLAS's fixed-order workspace
    prev, prev_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def device_name(device) -> str:
    """What trained an artifact, for its metrics: ``cpu`` or the GPU's name."""
    dev = torch.device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type


@contextmanager
def on_device(model, device):
    """``model`` on ``device`` for training or a harvest, back on the CPU afterwards.

    Everything after training (evaluation, indexes, dashboards, steering) runs on the CPU,
    where a one-layer model is quick, so artifacts never hold GPU tensors.
    """
    dev = torch.device(device)
    if dev.type == "cpu":
        yield dev
        return
    model.to(dev)
    try:
        yield dev
    finally:
        model.to("cpu")
