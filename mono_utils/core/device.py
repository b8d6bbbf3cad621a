"""Where training runs: the device helpers shared by the model trainer, the SAE trainer and the harvest.

Training and the activation harvest use a GPU when there is one (``$MONO_DEVICE`` overrides);
everything after training runs on the CPU, so artifacts never hold GPU tensors.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch


def pick_device(device=None) -> torch.device:
    """``device``, else ``$MONO_DEVICE`` (e.g. ``cpu`` to keep a GPU free), else CUDA when present."""
    device = device or os.environ.get("MONO_DEVICE") or None
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda")
    return torch.device("cpu")


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
