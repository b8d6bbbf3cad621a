"""The run-time malloc tuning: applied on glibc, idempotent, and off with MONO_MALLOC_TUNING=0."""
import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuning_applies_once_and_can_be_turned_off():
    code = "from mono_utils.core.malloc_tuning import tune_malloc; print(tune_malloc(), tune_malloc())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert on.stdout.split() == ["True", "True"]
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"MONO_MALLOC_TUNING": "0", "PATH": ""})
    assert off.stdout.split() == ["False", "False"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuned_training_step_stops_faulting_its_memory_in():
    """The point of it: a model step's 64 MB logits (batch 32 x 128, vocabulary 4096) are reused,
    not faulted in again every step (glibc's dynamic mmap threshold stops at 32 MB)."""
    code = ("import resource, sys, torch\n"
            "torch.set_num_threads(1)\n"
            "from mono_utils.core.malloc_tuning import tune_malloc\n"
            "from mono_utils.core.model import ModelConfig, build_model\n"
            "if sys.argv[1] == '1': tune_malloc()\n"
            "model = build_model(ModelConfig(d_vocab=4096, d_model=32, n_heads=2, d_mlp=64, n_ctx=128))\n"
            "batch = torch.randint(0, 4096, (32, 128), generator=torch.Generator().manual_seed(0))\n"
            "def step():\n"
            "    model.zero_grad(set_to_none=True); model(batch, return_type='loss').backward()\n"
            "for _ in range(2): step()\n"
            "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(3): step()\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 3)")
    faults = {}
    for flag in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True, check=True,
                             env={"MONO_MALLOC_TUNING": "1", "PATH": "", "OMP_NUM_THREADS": "1"})
        faults[flag] = float(out.stdout.split()[-1])
    # untuned: >= 64 MB faulted in a step. Tuned: here ~none, but a CI sandbox's kernel (gVisor-like) still
    # reported 43 MB a step against 330 MB untuned, so the test asks for the effect, not for zero: a quarter at most
    assert faults["0"] > 16_000 and faults["1"] * 4 < faults["0"], faults


def test_release_memory_hands_free_pages_back():
    """Issue 21: between the family's sizes the build trims the heap; it runs and says whether it did."""
    import sys
    from mono_utils.core.malloc_tuning import release_memory
    blocks = [bytearray(8 << 20) for _ in range(8)]   # 64 MB on the heap, then freed
    del blocks
    assert release_memory() in ((True, False) if sys.platform.startswith("linux") else (False,))
