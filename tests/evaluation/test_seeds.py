"""Error bars: A/1's recipe at three seeds (different weights, the same config but for the seed, the
same budget), the seed table read from their metrics, and the beyond-the-spread rules on known numbers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mono_utils.evaluation.seeds import (
    SEED_METRICS,
    SEEDS,
    beyond_seed_spread,
    get_seed_runs,
    seed_table,
    side_preset,
    side_tokens,
)
from mono_utils.pipeline.presets import get_preset
from mono_utils.pipeline.saes import get_sae, sae_metrics


@pytest.fixture(scope="module")
def runs(tiny, smoke_store, smoke_model):
    return get_seed_runs(tiny, smoke_store, progress=False)


def _without_seed(folder) -> dict:
    """The artifact's config.json less the seed and what the run produced (weights' checksum, the input
    scale measured on a seeded sample)."""
    c = json.loads((Path(folder) / "config.json").read_text())
    assert {c["sae"]["seed"], c["train"]["seed"]} == {c["sae"]["seed"]}   # one seed sets both
    for part, key in (("sae", "seed"), ("train", "seed"), ("sae", "input_scale")):
        c[part].pop(key)
    c.pop("weights_sha256")
    return c


def test_seeds_give_different_weights_and_the_same_config_otherwise(runs, tiny):
    assert list(runs) == list(SEEDS) == [0, 1, 2]
    assert len({Path(s.folder) for s in runs.values()}) == 3
    for a in SEEDS:
        for b in SEEDS:
            if a < b:
                assert not torch.equal(runs[a].W_dec, runs[b].W_dec) and not torch.equal(runs[a].W_enc, runs[b].W_enc)
    configs = [_without_seed(s.folder) for s in runs.values()]
    assert all(c == configs[0] for c in configs[1:])
    seeds = [json.loads((Path(s.folder) / "config.json").read_text())["train"]["seed"] for s in runs.values()]
    assert seeds == [0, 1, 2]
    tokens = {sae_metrics(s)["train_tokens"] for s in runs.values()}
    assert tokens == {side_tokens(tiny) // tiny.sae_batch * tiny.sae_batch}
    for s in runs.values():   # A/1's recipe and width
        assert s.cfg.recipe_name == tiny.sae_recipe and s.cfg.d_sae == tiny.sae_main


def test_seed_runs_are_side_runs_of_a1s_recipe(runs, tiny, smoke_store):
    a1 = get_sae(tiny, smoke_store, progress=False)
    c0, ca = _without_seed(runs[0].folder), _without_seed(a1.folder)
    assert c0["sae"] == ca["sae"] and c0["model"] == ca["model"]
    assert c0["train"]["total_tokens"] < ca["train"]["total_tokens"]
    assert c0["eval"]["eval_tokens"] < ca["eval"]["eval_tokens"]


def test_side_budget_per_preset():
    d = get_preset("default")
    assert side_tokens(d) == 500_000 and side_preset(d).eval_tokens == 65_536
    assert side_preset(d).density_tokens == 262_144 and side_preset(d).n_ctx == d.n_ctx
    paper = get_preset("paper")
    assert side_tokens(paper) == paper.sae_tokens and side_preset(paper) is paper


def test_the_seed_table(runs, smoke_store, tiny):
    a1 = get_sae(tiny, smoke_store, progress=False)
    t = seed_table(runs, reference=a1)
    assert list(t.index) == [label for _, label in SEED_METRICS]
    assert list(t.columns) == ["seed 0", "seed 1", "seed 2", "mean", "std", "min", "max", "A/1"]
    for key, label in SEED_METRICS:
        vals = [sae_metrics(runs[k])[key] for k in SEEDS]
        if any(v is None for v in vals):
            continue
        assert t.loc[label, "mean"] == pytest.approx(np.mean(vals))
        assert t.loc[label, "std"] == pytest.approx(np.std(vals, ddof=1))
        assert t.loc[label, "min"] == min(vals) and t.loc[label, "max"] == max(vals)
        ref = sae_metrics(a1)[key]
        assert ref is None or t.loc[label, "A/1"] == pytest.approx(ref)
    assert t.loc["L0", "std"] > 0   # three seeds differ
    cap = t.attrs["caption"]
    assert f"{side_tokens(tiny):,}" in cap and "sample standard deviation" in cap and "A/1" in cap
    with pytest.raises(ValueError, match="get_seed_runs"):
        seed_table({0: object()})


def test_beyond_seed_spread_rules():
    spread = [0.0, 0.0, 0.3]      # sample std 0.173: 2 std = 0.346; range 0.3
    r = beyond_seed_spread(1.0, 0.5, spread)
    assert r["verdict"] == "beyond" and r["std rule"] == r["range rule"] == "beyond"
    assert r["difference"] == pytest.approx(0.5)
    assert beyond_seed_spread(1.0, 0.9, spread)["verdict"] == "within"
    r = beyond_seed_spread(0.32, 0.0, spread)   # beyond the range, within 2 std: both shown
    assert (r["std rule"], r["range rule"]) == ("within", "beyond")
    assert r["verdict"] == "std rule: within, range rule: beyond"
    assert r["2 std"] == pytest.approx(2 * np.std(spread, ddof=1)) and r["range"] == pytest.approx(0.3)
    assert beyond_seed_spread(-0.5, 0.0, spread)["verdict"] == "beyond"     # |difference|
    assert beyond_seed_spread(None, 0.0, spread)["verdict"] == "n/a"
    assert beyond_seed_spread(math.nan, 0.0, spread)["verdict"] == "n/a"
    with pytest.raises(ValueError, match="at least two seeds"):
        beyond_seed_spread(1.0, 0.0, [1.0])
    with pytest.raises(ValueError, match="seed_table"):
        beyond_seed_spread(1.0, 0.0, 3.0)


def test_beyond_seed_spread_takes_a_seed_table_row(runs):
    row = seed_table(runs).loc["L0"]
    r = beyond_seed_spread(row["max"] + 10 * row["std"] + 1, row["min"], row)
    assert r["verdict"] == "beyond"
    assert r["range"] == pytest.approx(row["max"] - row["min"])


def test_bad_seeds(tiny, smoke_store):
    for bad in [(), (0, 0), (-1,), (1.5,)]:
        with pytest.raises(ValueError, match="distinct non-negative integers"):
            get_seed_runs(tiny, smoke_store, seeds=bad, progress=False)
