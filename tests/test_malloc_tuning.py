"""The run-time malloc tuning: applied on glibc, idempotent, and off with MONO_MALLOC_TUNING=0."""
import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuning_applies_once_and_can_be_turned_off():
    code = "from mono_utils.malloc_tuning import tune_malloc; print(tune_malloc(), tune_malloc())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert on.stdout.split() == ["True", "True"]
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"MONO_MALLOC_TUNING": "0", "PATH": ""})
    assert off.stdout.split() == ["False", "False"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuned_sae_step_stops_faulting_its_memory_in():
    """The point of it: an SAE step (512 -> 4096, batch 512) reuses its 8 MB temporaries."""
    code = ("import resource, sys, torch\n"
            "torch.set_num_threads(1)\n"
            "from mono_utils.malloc_tuning import tune_malloc\n"
            "from mono_utils.sae import SAEConfig, SparseAutoencoder\n"
            "from mono_utils.sae_kernels import sae_grads\n"
            "if sys.argv[1] == '1': tune_malloc()\n"
            "sae = SparseAutoencoder(SAEConfig(d_in=512, d_sae=4096, seed=0))\n"
            "x = torch.randn(512, 512, generator=torch.Generator().manual_seed(0)).relu()\n"
            "for _ in range(3): sae_grads(sae, x, sparse=False)\n"
            "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(5): sae_grads(sae, x, sparse=False)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 5)")
    faults = {}
    for flag in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True, check=True,
                             env={"MONO_MALLOC_TUNING": "1", "PATH": "", "OMP_NUM_THREADS": "1"})
        faults[flag] = float(out.stdout.split()[-1])
    assert faults["1"] * 2 < faults["0"], faults   # measured ~3x fewer on the dense step, ~10x sparse
