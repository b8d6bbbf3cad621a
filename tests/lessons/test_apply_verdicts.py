"""The apply cells' verdicts: each notebook's solution, run on data shaped like the real data, matches
the package reference that its apply cell compares it with, at the apply cell's tolerance (a notebook
run on smoke needs a built store; these need none). A broken solution gets a failing verdict."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mono_utils import lessons
from mono_utils.lessons import checks
from mono_utils.lessons.student import solution_source, tags
from mono_utils.notebooks import notebook_paths


def _solution(exercise_id: str) -> dict:
    """The namespace of the notebook's solution cell for an exercise (its cell id ex-NN-M-solution)."""
    import nbformat
    for p in notebook_paths():
        for c in nbformat.read(p, as_version=4).cells:
            if c.get("id") == exercise_id and "solution" in tags(c):
                ns = {}
                exec(solution_source(c.source), ns)
                return ns
    raise LookupError(exercise_id)


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setenv(checks.STRICT_ENV, "1")      # a verdict that does not match raises


def test_01_1_forward_matches_the_sae_at_full_width():
    from mono_utils.core.sae import SAEConfig, SparseAutoencoder
    sae = SparseAutoencoder(SAEConfig(d_in=512, d_sae=4096, seed=0))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        sae.b_dec.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    sae.set_input_scale(3.0)
    sae.requires_grad_(False)
    x = torch.relu(torch.randn(256, 512, generator=torch.Generator().manual_seed(3))) * 2
    t = sae.saelens_tensors()
    fwd = _solution("ex-01-1-solution")["sae_forward"]
    with torch.no_grad():
        assert lessons.verdict("01.1", fwd(x, t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"]), (sae.encode(x), sae(x)),
                               tol=1e-3).ok
        fvu = _solution("ex-01-3-solution")["fvu"]
        from mono_utils.core.metrics import fvu as reference_fvu
        assert lessons.verdict("01.3", fvu(x, sae(x)), reference_fvu(x, sae(x)), tol=1e-4).ok
        wrong = lambda x, We, be, Wd, bd: (torch.relu(x @ We + be), torch.relu(x @ We + be) @ Wd + bd)
        with pytest.raises(lessons.ExerciseFailed, match="known mistake gives: no pre-bias"):
            f = torch.relu(x @ t["W_enc"] + t["b_enc"])
            lessons.verdict("01.1", wrong(x, t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"]), (sae.encode(x), sae(x)),
                            tol=1e-3, mistakes={"no pre-bias": (f, f @ t["W_dec"] + t["b_dec"])})


def test_04_1_matches_the_packages_max_correlation():
    from mono_utils.universality.compare import max_correlation
    g = np.random.default_rng(0)
    na = np.maximum(g.normal(0, 1, (3000, 64)), 0)
    nb = np.maximum(na[:, g.permutation(64)] + g.normal(0, 0.7, (3000, 64)), 0)
    best, _ = _solution("ex-04-1-solution")["max_activation_correlation"](na, nb)
    assert lessons.verdict("04.1", np.asarray(best, np.float64), max_correlation(na, nb).max_corr, tol=1e-4).ok


def test_05_1_matches_the_packages_links():
    from mono_utils.splitting.family import link_activations
    small, large = checks._family_data()                   # raw activations with every trap of the check
    s_size, l_size = small.shape[1], large.shape[1]
    pad_s = np.zeros((small.shape[0], 8)); pad_s[:, :s_size] = small
    pad_l = np.zeros((small.shape[0], 16)); pad_l[:, :l_size] = large
    ref = link_activations({8: sp.csr_matrix(pad_s), 16: sp.csr_matrix(pad_l)}, threshold=0.4).parent[1]
    mine = np.asarray(_solution("ex-05-1-solution")["link_parents"](pad_s, pad_l))
    assert lessons.verdict("05.1", mine, np.asarray(ref, np.int64)).ok


def test_02_3_and_01_4_match_their_references():
    acts, context = checks._domain_data()
    best = _solution("ex-02-3-solution")["best_feature_for_context"]
    for bar in (0.5, 0.6, 0.99):
        j, spec, sens = best(acts, context, bar)
        assert lessons.verdict("02.3", (int(j), float(spec), float(sens)),
                               lessons.reference_best_feature(acts, context, bar), tol=1e-6).ok
    step = _solution("ex-01-4-solution")["sae_train_step"]
    mine, ref = lessons.planted_run(step), lessons.planted_run()
    assert lessons.verdict("01.4", mine["best_cosine"], ref["best_cosine"], tol=1e-2).ok
    assert mine["recovered"] == 8 > lessons.planted_run(step, resample=False)["recovered"]
