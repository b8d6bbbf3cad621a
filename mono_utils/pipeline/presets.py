"""Presets: one small config object per machine size.

Every notebook starts with ``preset = get_preset()``; the ``MONO_PRESET`` environment
variable overrides the notebook's choice so CI can run everything on ``smoke``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from ..core.sae import RECIPES
from ..store.artifacts import ArtifactStore

PRESET_ENV = "MONO_PRESET"
SAE_SCHEDULES = ("short", "paper")


@dataclass(frozen=True)
class Preset:
    name: str
    # corpus + tokenizer
    corpus_bytes: int
    vocab_size: int
    # transformer (the paper's shape on default/paper)
    d_model: int
    n_heads: int
    d_mlp: int
    n_ctx: int
    model_tokens: int          # training budget in tokens for each of A and B
    model_batch: int           # sequences per step
    model_lr: float
    # sparse autoencoders
    sae_sizes: tuple[int, ...]  # the A/0.. family used for splitting
    sae_main: int               # A/1 and B/1
    l1_coeff: float
    topk_k: int
    sae_tokens: int             # activations seen by each SAE
    sae_batch: int
    sae_lr: float
    # evaluation
    eval_tokens: int            # metric evaluation tokens (loss recovered, MSE, L0, KL)
    # feature density and dead features: encoder-only, on more held-out tokens, so that a rare
    # feature (the paper's "ultralow" cluster) is told apart from one that never fires
    density_tokens: int
    index_tokens: int           # activation index for dashboards
    universality_tokens: int
    seeds: dict = field(default_factory=lambda: {"A": 0, "B": 1})
    # policy: what a machine of this size can afford
    sae_schedule: str = "short"       # "short": lr decay and resampling to 80% of a short run; "paper": constant lr
    side_runs_full: bool = False      # TopK, the lambda sweep, the family's other sizes and the randomized
                                      # control on all of sae_tokens (else on a fraction, see build.saes)
    autointerp_units: int | None = None   # units scored per kind in notebook 03 (None: every live unit)
    # the recipe (core.sae.RECIPES) of A/1, B/1, the family and the randomized control; the paper's
    # recipe (paper2023) stays built beside it at A/1's width and tokens (build.saes.get_paper_sae)
    sae_recipe: str = "paper2023"

    def replace(self, **changes) -> "Preset":
        """A copy with some fields changed (validated)."""
        return validate(dataclasses.replace(self, **changes))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, Preset] = {
    # tiny, for CI: every notebook runs in about a minute
    "smoke": Preset(
        name="smoke", corpus_bytes=600_000, vocab_size=1024,
        d_model=64, n_heads=2, d_mlp=128, n_ctx=64,
        model_tokens=200_000, model_batch=32, model_lr=3e-3,
        sae_sizes=(128, 256, 512), sae_main=512, l1_coeff=2e-2, topk_k=16,
        sae_tokens=200_000, sae_batch=1024, sae_lr=1e-3,
        eval_tokens=16_384, density_tokens=32_768, index_tokens=32_768, universality_tokens=16_384,
        sae_recipe="batchtopk",   # as default, so that CI runs the default's path
    ),
    # a 2-core CPU laptop, offline
    "default": Preset(
        name="default", corpus_bytes=20_000_000, vocab_size=4096,
        d_model=128, n_heads=4, d_mlp=512, n_ctx=128,
        model_tokens=4_000_000, model_batch=32, model_lr=2e-3,
        # small SAE batches, many steps: A/1 on 4M activations reached 92% loss recovered at
        # L0 26 (batch 512, lr 3.5e-4), against 82% with 43% dead at batch 4096 (lr 1e-3).
        # At batch 512, lr 1e-3 beats 3.5e-4 on every count (A/1: L0 17.7, 94.1%, 24 dead) and
        # its features are far more universal (median max correlation 0.76 against 0.58);
        # see benchmarks/RESULTS.md
        # k 18: the L0 of the paper's recipe at lambda 5.6e-3 (17.7), so the two compare at one sparsity
        sae_sizes=(512, 2048, 4096, 8192), sae_main=4096, l1_coeff=5.6e-3, topk_k=18,
        sae_tokens=4_000_000, sae_batch=512, sae_lr=1e-3,
        # index_tokens: 512k (1M until the build outgrew make run's 45 minutes: four indexes and every analysis
        # that reads them took half the time, and the bundle lost about 2 GB)
        eval_tokens=262_144, density_tokens=524_288, index_tokens=524_288, universality_tokens=262_144,
        # BatchTopK, chosen by measurement over the paper's recipe (docs/findings.md, "SAE recipes"): on 4M
        # activations the paper's leaves ~38% of A/1 dead or ultralow, BatchTopK almost none
        sae_recipe="batchtopk",
    ),
    # GPU-sized
    "paper": Preset(
        name="paper", corpus_bytes=200_000_000, vocab_size=4096,
        d_model=128, n_heads=4, d_mlp=512, n_ctx=128,
        model_tokens=100_000_000, model_batch=128, model_lr=2e-3,
        sae_sizes=(512, 4096, 16384, 32768, 65536, 131072), sae_main=4096, l1_coeff=3e-3,
        topk_k=24, sae_tokens=200_000_000, sae_batch=8192, sae_lr=1e-4,
        eval_tokens=1_048_576, density_tokens=4_194_304, index_tokens=4_194_304, universality_tokens=1_048_576,
        sae_schedule="paper", side_runs_full=True, autointerp_units=500,
    ),
}

# The paper preset's shapes on a CPU: its widths, context, vocabulary, SAE sizes (up to 131,072
# features), schedule, policy (every side run on all of sae_tokens) and every stage, with the token
# budgets divided so that the whole build runs on a 2-core machine in minutes. What it proves is
# the shapes (memory, anything growing faster than linearly in the number of features), not the
# quality. Its figures, and how each stage grows, come from benchmarks/paper_dry.py and
# benchmarks/paper_plan.py.
DRY_SCALE = 4096        # the models' training tokens: paper / DRY_SCALE
DRY_SAE_STEPS = 24      # every SAE (the 131,072-wide one too) trains this many steps of DRY_SAE_BATCH
DRY_SAE_BATCH = 256     # activations a step (paper: 8,192); per-step memory grows with the batch
DRY_EVAL_SCALE = 1024   # evaluation budgets (eval, density, index, universality): paper / DRY_EVAL_SCALE
_paper = PRESETS["paper"]
PRESETS["paper-dry"] = dataclasses.replace(
    _paper, name="paper-dry",
    corpus_bytes=_paper.corpus_bytes // 100,   # 2 MB: enough text for the 4,096-token BPE and the held-out rows
    model_tokens=_paper.model_tokens // DRY_SCALE // (_paper.model_batch * _paper.n_ctx) * (_paper.model_batch * _paper.n_ctx),
    sae_batch=DRY_SAE_BATCH, sae_tokens=DRY_SAE_STEPS * DRY_SAE_BATCH,
    # A few steps at the paper's lr 1e-4 leave an SAE firing on half its features (L0 ~8,000 of
    # 16,384, measured), a density no trained SAE has: the family's links would then be dense
    # 65,536 x 131,072 pairs. At 1e-2 the encoder biases fall fast enough that ~20 steps leave it
    # sparse (L0 ~40 of 16,384 after 23 steps of 1,024, measured), the shape the paper's build
    # meets. Its reconstructions are poor: the dry run proves shapes, not quality.
    sae_lr=1e-2,
    eval_tokens=_paper.eval_tokens // DRY_EVAL_SCALE, density_tokens=_paper.density_tokens // DRY_EVAL_SCALE,
    index_tokens=_paper.index_tokens // DRY_EVAL_SCALE, universality_tokens=_paper.universality_tokens // DRY_EVAL_SCALE,
)


def validate(p: Preset) -> Preset:
    positive = ["corpus_bytes", "vocab_size", "d_model", "n_heads", "d_mlp", "n_ctx",
                "model_tokens", "model_batch", "sae_main", "topk_k", "sae_tokens",
                "sae_batch", "eval_tokens", "density_tokens", "index_tokens", "universality_tokens"]
    for name in positive:
        v = getattr(p, name)
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"preset {p.name!r}: {name} must be a positive integer, got {v!r}")
    for name in ["model_lr", "l1_coeff", "sae_lr"]:
        v = getattr(p, name)
        if not (isinstance(v, (int, float)) and v > 0):
            raise ValueError(f"preset {p.name!r}: {name} must be > 0, got {v!r}")
    if p.d_model % p.n_heads:
        raise ValueError(f"preset {p.name!r}: d_model {p.d_model} is not divisible by n_heads {p.n_heads}")
    if not p.sae_sizes or any((not isinstance(s, int)) or s <= 0 for s in p.sae_sizes):
        raise ValueError(f"preset {p.name!r}: sae_sizes must be positive integers, got {p.sae_sizes!r}")
    if p.sae_schedule not in SAE_SCHEDULES:
        raise ValueError(f"preset {p.name!r}: sae_schedule must be one of {SAE_SCHEDULES}, got {p.sae_schedule!r}")
    if p.autointerp_units is not None and (not isinstance(p.autointerp_units, int) or p.autointerp_units <= 0):
        raise ValueError(f"preset {p.name!r}: autointerp_units must be None or a positive integer, "
                         f"got {p.autointerp_units!r}")
    if p.sae_recipe not in RECIPES:
        raise ValueError(f"preset {p.name!r}: sae_recipe must be one of {tuple(RECIPES)}, got {p.sae_recipe!r}")
    if p.topk_k > p.sae_main:
        raise ValueError(f"preset {p.name!r}: topk_k {p.topk_k} exceeds sae_main {p.sae_main}")
    return p


def get_preset(name: Preset | str | None = None) -> Preset:
    """``name`` itself when it is a :class:`Preset`; else the preset named by ``$MONO_PRESET``,
    else ``name``, else ``default``."""
    if isinstance(name, Preset):
        return validate(name)
    chosen = os.environ.get(PRESET_ENV) or name or "default"
    if chosen not in PRESETS:
        raise ValueError(
            f"unknown preset {chosen!r}: choose one of {', '.join(PRESETS)} "
            f"(set ${PRESET_ENV} or pass name=...)")
    return validate(PRESETS[chosen])


def resolve(preset: Preset | str | None = None, store: ArtifactStore | None = None) -> tuple[Preset, ArtifactStore]:
    """The one way every ``get_*`` recipe turns its ``preset`` and ``store`` arguments into
    objects: a name or None goes through :func:`get_preset`; no store means the default one
    (``data/artifacts`` or ``$MONO_ARTIFACTS``)."""
    return get_preset(preset), (store if store is not None else ArtifactStore())
