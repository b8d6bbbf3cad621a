"""What every lesson check does around a student's function: a time limit, and a look at what it returned.

A function that loops forever used to hang the check (and the notebook) with no hint; one that
returned a complex tensor or a NumPy array of Python objects crashed the check's own comparison
with a torch or NumPy error. :func:`call_with_limit` stops the function after ``time_limit()``
seconds (``$MONO_CHECK_TIME_LIMIT``, default 20) and :func:`returned_problem` names a result that
is not real numbers, so the check shows a message instead.
"""
from __future__ import annotations

import math
import os
import signal
import threading
import time

import numpy as np
import torch

TIME_LIMIT_ENV = "MONO_CHECK_TIME_LIMIT"
DEFAULT_TIME_LIMIT = 20.0   # seconds per call: a check's inputs are tiny, a correct answer takes milliseconds


class TooSlow(BaseException):
    """The student's function ran past the time limit. A BaseException, so that a student's own
    ``except Exception:`` inside the loop does not swallow it."""

    def __init__(self, limit: float):
        super().__init__(f"your function ran longer than {limit:g} s and was stopped: is there a loop that never "
                         f"ends (a while whose condition never turns false, an index that never grows)? A correct "
                         f"answer takes well under a second here (the limit is ${TIME_LIMIT_ENV})")


def time_limit() -> float:
    """Seconds a student's function may run in a check (``$MONO_CHECK_TIME_LIMIT``; 0 or less: no limit)."""
    raw = os.environ.get(TIME_LIMIT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TIME_LIMIT
    except ValueError:
        raise ValueError(f"{TIME_LIMIT_ENV}={raw!r} is not a number of seconds: use e.g. {TIME_LIMIT_ENV}=20") from None
    return value if math.isfinite(value) else DEFAULT_TIME_LIMIT


def call_with_limit(fn, args=(), kwargs=None, limit: float | None = None):
    """``fn(*args, **kwargs)``, raising :class:`TooSlow` after ``limit`` seconds.

    In the main thread (a notebook's cells run there) a SIGALRM timer interrupts the function
    itself; any timer that was already set is restored with its remaining time. Elsewhere the call
    runs in a helper thread that is abandoned at the deadline (Python cannot stop a thread: it runs
    on in the background, and the message says so).
    """
    kwargs = kwargs or {}
    limit = time_limit() if limit is None else limit
    if limit <= 0:
        return fn(*args, **kwargs)
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def on_alarm(signum, frame):
            raise TooSlow(limit)
        start = time.monotonic()
        old_handler = signal.signal(signal.SIGALRM, on_alarm)
        old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            return fn(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler if old_handler is not None else signal.SIG_DFL)
            if old_delay:   # someone else's timer (pytest-timeout, the student's own): give it back
                signal.setitimer(signal.ITIMER_REAL, max(old_delay - (time.monotonic() - start), 1e-3), old_interval)
    box: dict = {}

    def run():
        try:
            box["out"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["err"] = e
    worker = threading.Thread(target=run, name="mono-check-call", daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive():
        raise TooSlow(limit)
    if "err" in box:
        raise box["err"]
    return box.get("out")


def returned_problem(out, depth: int = 0) -> str | None:
    """Why ``out`` (a student's return value) is not something a check can compare as real numbers
    (None: it can). Complex tensors and arrays, and NumPy arrays of Python objects, are named."""
    fix = "return real numbers (a float tensor or array)"
    if torch.is_tensor(out):
        if out.is_complex():
            return (f"your function returned a complex tensor (dtype {out.dtype}): {fix}; take .real only if the "
                    f"imaginary part is really zero, or find the step that made it complex (a sqrt or log of a "
                    f"negative number, torch.fft...)")
        return None
    if isinstance(out, np.ndarray):
        if out.dtype.kind == "c":
            return f"your function returned a complex array (dtype {out.dtype}): {fix}"
        if out.dtype.kind == "O":
            return (f"your function returned a NumPy array of Python objects (dtype object, shape {out.shape}): "
                    f"{fix}, e.g. np.array(values, dtype=float), or torch.stack of tensors instead of np.array of them")
        return None
    if isinstance(out, complex):
        return f"your function returned a complex number ({out}): {fix}"
    if isinstance(out, (tuple, list)) and depth < 2:
        for i, item in enumerate(out[:64]):
            problem = returned_problem(item, depth + 1)
            if problem:
                return f"item {i + 1} of what it returned: {problem.replace('your function returned ', '')}"
    return None
