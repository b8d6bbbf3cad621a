"""Error bars: A/1's recipe retrained at several seeds, and whether a difference is beyond their spread.

Every figure of the suite comes from one training run. ``get_seed_runs(preset)`` trains A/1's recipe
(``preset.sae_recipe``, A/1's width and setting) at seeds 0, 1 and 2; a seed sets everything random
in a run (the SAE's initialisation and the order of its training activations). The runs are side runs:
on presets that do not train side runs on everything (``preset.side_runs_full``: default, smoke) each
seed trains on ``side_tokens(preset)`` activations, an eighth of A/1's (default: 500,000 against
4,000,000), the same number for every seed, and is evaluated on a smaller held-out sample
(``side_preset``: a quarter of the evaluation tokens, half the density tokens). The spread they show is
the spread at that budget, a stand-in for A/1's own (a run on 8x more activations is likely to vary
less). On ``paper`` every seed trains on all of ``sae_tokens`` and seed 0 is A/1 itself.

``seed_table(runs)``: each headline metric of ``sae_metrics`` per seed, with mean, standard deviation
(the sample one, n - 1) and min/max. ``beyond_seed_spread(a, b, spread)``: is the difference between
two dictionaries' values larger than the seeds' spread? Two rules, both shown (see its docstring).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..core.malloc_tuning import release_memory
from ..pipeline.models import get_model
from ..pipeline.presets import Preset, resolve
from ..pipeline.saes import get_sae, sae_metrics, side_eval_preset
from ..pipeline.saes import side_run_tokens as side_tokens   # one budget for every side run

SEEDS = (0, 1, 2)

# (key in metrics.json, label in the table), in the order notebook 01 shows A/1's figures
SEED_METRICS = (("l0", "L0"), ("fvu", "FVU"), ("loss_recovered", "loss recovered (zero abl.)"),
                ("loss_recovered_mean", "loss recovered (mean abl.)"), ("kl_sae", "KL (clean || spliced)"),
                ("dead", "dead"), ("ultralow", "ultralow"))


def side_preset(p: Preset) -> Preset:
    """``p`` with the side runs' smaller evaluation (``pipeline.saes.side_eval_preset``: a quarter of
    ``eval_tokens``, half of ``density_tokens``); ``p`` itself where side runs are full."""
    return side_eval_preset(p)


def get_seed_runs(preset=None, store=None, *, which: str = "A", seeds=SEEDS, progress: bool = True) -> dict:
    """``{seed: SparseAutoencoder}``: A/1's recipe (``preset.sae_recipe``, A/1's width, lambda or k) on
    model ``which`` at each seed, each on ``side_tokens(preset)`` activations and evaluated as
    ``side_preset(preset)`` says; artifacts of the store, built once."""
    p, s = resolve(preset, store)
    seeds = tuple(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(k, int) and not isinstance(k, bool)
                                                              and k >= 0 for k in seeds):
        raise ValueError(f"seeds must be distinct non-negative integers, got {seeds!r}: e.g. seeds=(0, 1, 2)")
    get_model(p, s, which=which, progress=progress)   # built (if at all) with the preset's own evaluation
    pe, tokens = side_preset(p), side_tokens(p)
    runs = {}
    for k in tqdm(seeds, desc=f"A/1 recipe at {len(seeds)} seeds", disable=not progress):
        runs[k] = get_sae(pe, s, which=which, seed=k, total_tokens=tokens, progress=progress)
        release_memory()
    return runs


def _value(m: dict, key: str) -> float:
    v = m.get(key)
    return float("nan") if v is None else float(v)


def seed_table(runs: dict, reference=None):
    """One row per headline metric (``SEED_METRICS``), one column per seed of ``runs``
    (``get_seed_runs``), then ``mean``, ``std`` (sample standard deviation, n - 1), ``min``, ``max``
    and, with ``reference`` (an SAE from the store, e.g. A/1), its value in a last column.

    ``table.attrs["caption"]`` says how many activations the seeds trained on and how many tokens
    evaluated them (a seed run is a side run: fewer than A/1's, see the module's docstring)."""
    import pandas as pd  # lazy: pandas is heavy, and only notebook views need it (not the build's workers)
    if not runs:
        raise ValueError("seed_table needs at least one run: pass get_seed_runs(preset)")
    metrics = {}
    for k, sae in runs.items():
        folder = getattr(sae, "folder", None)
        if folder is None or not (Path(folder) / "metrics.json").exists():
            raise ValueError(f"seed {k!r}: the SAE has no metrics.json (not loaded from the artifact store): "
                             f"pass the SAEs of get_seed_runs(preset)")
        metrics[k] = sae_metrics(sae)
    rows = []
    for key, label in SEED_METRICS:
        vals = np.array([_value(metrics[k], key) for k in runs])
        row = {f"seed {k}": v for k, v in zip(runs, vals)}
        ok = vals[np.isfinite(vals)]
        row.update(mean=float(ok.mean()) if len(ok) else math.nan,
                   std=float(ok.std(ddof=1)) if len(ok) > 1 else math.nan,
                   min=float(ok.min()) if len(ok) else math.nan, max=float(ok.max()) if len(ok) else math.nan)
        if reference is not None:
            row["A/1"] = _value(sae_metrics(reference), key)
        rows.append({"metric": label, **row})
    table = pd.DataFrame(rows).set_index("metric")
    first = metrics[next(iter(runs))]
    tokens = sorted({int(m.get("train_tokens", 0)) for m in metrics.values()})
    caption = (f"A/1's recipe at seeds {', '.join(str(k) for k in runs)}, each trained on "
               f"{' / '.join(f'{t:,}' for t in tokens)} activations, evaluated on {int(first.get('eval_tokens', 0)):,} "
               f"held-out tokens (densities on {int(first.get('density_tokens', 0)):,}); std: sample standard deviation")
    if reference is not None:
        rm = sae_metrics(reference)
        caption += (f"; A/1: {int(rm.get('train_tokens', 0)):,} activations, evaluated on "
                    f"{int(rm.get('eval_tokens', 0)):,} tokens")
    table.attrs["caption"] = caption
    return table


def _spread_stats(spread) -> tuple[float, float]:
    """(sample std, max - min) of ``spread``: the seeds' values of one metric, or a ``seed_table`` row."""
    if hasattr(spread, "get") and spread.get("std") is not None and spread.get("min") is not None:
        return float(spread["std"]), float(spread["max"]) - float(spread["min"])
    try:
        vals = np.asarray(list(spread), dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"spread must be the seeds' values of one metric (e.g. [17.1, 17.6, 16.9]) or a row of "
                         f"seed_table(runs) (it has std, min and max), got {spread!r}") from e
    vals = vals[np.isfinite(vals)]
    if len(vals) < 2:
        raise ValueError(f"spread needs the values of at least two seeds, got {len(vals)} finite value(s): "
                         f"pass get_seed_runs' metric for every seed")
    return float(vals.std(ddof=1)), float(vals.max() - vals.min())


def beyond_seed_spread(a: float, b: float, spread) -> dict:
    """Is the difference ``a - b`` between two dictionaries' values of one metric beyond the seed spread?

    ``spread``: the seeds' values of that metric (``get_seed_runs``), or its row of ``seed_table``.
    Two rules, both reported:

    - ``std rule``: beyond when |a - b| > 2 x the seeds' sample standard deviation;
    - ``range rule``: beyond when |a - b| > the seeds' range (max - min), i.e. the two values differ by
      more than any two seeds did.

    With three seeds the range is on average about 1.7 standard deviations, so the rules can disagree;
    ``verdict`` is "beyond" or "within" when they agree, else says which rule says what. A missing
    value (None, NaN) gives "n/a". The seeds' spread is the spread of side runs on fewer activations
    (``side_tokens``): a stand-in for the spread of the runs compared.
    """
    std, rng = _spread_stats(spread)
    out = {"difference": math.nan, "2 std": 2 * std, "range": rng, "std rule": "n/a", "range rule": "n/a",
           "verdict": "n/a"}
    if a is None or b is None or not (math.isfinite(float(a)) and math.isfinite(float(b))):
        return out
    d = float(a) - float(b)
    out["difference"] = d
    out["std rule"] = "beyond" if abs(d) > 2 * std else "within"
    out["range rule"] = "beyond" if abs(d) > rng else "within"
    out["verdict"] = (out["std rule"] if out["std rule"] == out["range rule"]
                      else f"std rule: {out['std rule']}, range rule: {out['range rule']}")
    return out
