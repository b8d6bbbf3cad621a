"""The build's stage graph: every artifact the notebooks need, in order, with what each needs first.

It names artifacts of every lesson, so it sits above them (with the CLI), while each recipe lives
in its own package: ``pipeline`` for the corpus, models, SAEs and indexes, each lesson for its
analyses.
"""
from __future__ import annotations

from .autointerp.output_side import get_output_side
from .autointerp.run import get_offline_scores, get_randomized_index, get_randomized_sae
from .circuits.interp import get_transcoder_interp
from .circuits.interventions import get_intervention_agreement
from .evaluation.controls import get_frozen_decoder_sae, get_pca_dictionary
from .evaluation.output_side import get_dictionary_output_side
from .evaluation.panel import get_evaluation_panel
from .evaluation.seeds import get_seed_runs
from .pipeline.indexes import get_index, get_paper_index
from .pipeline.models import get_corpus_dir, get_model, get_tokenizer, get_tokens
from .pipeline.saes import get_lambda_sweep, get_paper_sae, get_recipe_runs, get_sae, get_sae_family, get_topk_sae
from .pipeline.transcoders import get_transcoder
from .features.proxies import get_proxy_table
from .splitting.family import get_family_analysis, get_umap_layout
from .splitting.matryoshka import get_matryoshka_analysis, get_matryoshka_sae
from .steering.catalog import get_feature_catalog
from .universality.cache import get_comparison


def build_stages(preset, store):
    """The ordered (name, function) stages that build everything the notebooks need."""
    stages = [
        ("corpus", lambda: get_corpus_dir(preset, store)),
        ("tokenizer", lambda: get_tokenizer(preset, store)),
        ("tokens", lambda: get_tokens(preset, store)),
        ("model A", lambda: get_model(preset, store, which="A")),
        ("model B", lambda: get_model(preset, store, which="B")),
    ]
    # longest first once their inputs exist, so that two workers finish together
    stages += [
        ("SAE A/1", lambda: get_sae(preset, which="A", store=store)),
        ("SAE B/1", lambda: get_sae(preset, which="B", store=store)),
        # the paper's recipe at A/1's width and tokens, for every comparison with the paper
        # (on paper, whose recipe is the paper's, this is A/1 and loads at once)
        ("SAE A/1 paper2023", lambda: get_paper_sae(preset, which="A", store=store)),
        ("SAE family A", lambda: get_sae_family(preset, which="A", store=store)),
        # one nested (Matryoshka) SAE of the family's widest width, on that member's tokens (notebook 05)
        ("Matryoshka A", lambda: get_matryoshka_sae(preset, store, which="A")),
        ("SAE randomized", lambda: get_randomized_sae(preset, store=store)),
        ("SAE A/1 TopK", lambda: get_topk_sae(preset, which="A", store=store)),
        # issue 30's error bars: A/1's recipe at three seeds, side runs (an eighth of A/1's activations, a
        # smaller evaluation); seed 0 is also the recipes' batchtopk entry
        ("SAE A/1 seeds", lambda: get_seed_runs(preset, store)),
        # notebook 01's four recipes on the side runs' tokens; its topk and batchtopk entries are the TopK run
        # and seed 0 of the seed runs (the same artifacts)
        ("SAE recipes", lambda: get_recipe_runs(preset, store, which="A")),
        ("SAE A lambda sweep", lambda: get_lambda_sweep(preset, which="A", store=store)),
        # issue 30's control: A/1's recipe with a frozen random decoder, a side run
        ("SAE A/1 frozen decoder", lambda: get_frozen_decoder_sae(preset, store)),
        ("PCA A", lambda: get_pca_dictionary(preset, store)),
        # notebook 07: model A's MLP as a transcoder (A/1's width and recipe), for attribution graphs
        ("transcoder A", lambda: get_transcoder(preset, store, which="A")),
        ("index A/1", lambda: get_index(preset, which="A", store=store)),
        ("index B/1", lambda: get_index(preset, which="B", store=store)),
        ("index randomized", lambda: get_randomized_index(preset, store=store)),
        ("index A/1 paper2023", lambda: get_paper_index(preset, which="A", store=store)),
        # analyses the notebooks show, cached so that every notebook opens in seconds
        ("proxy table", lambda: get_proxy_table(preset, store)),
        ("proxy table paper2023", lambda: get_proxy_table(preset, store, dictionary="paper2023")),
        ("autointerp offline", lambda: get_offline_scores(preset, store)),
        # notebook 03's output side: what each unit does, explained and scored as its input side is
        ("autointerp output side", lambda: get_output_side(preset, store)),
        # the same for every dictionary of issue 30 (the frozen-decoder and PCA controls too), on held-out rows
        ("autointerp output side, every dictionary", lambda: get_dictionary_output_side(preset, store)),
        ("feature catalog", lambda: get_feature_catalog(preset, store)),
        ("universality comparison", lambda: get_comparison(preset, store)),
        ("family analysis", lambda: get_family_analysis(preset, store)),
        ("family UMAP", lambda: get_umap_layout(preset, store)),
        # notebook 05's nested dictionary beside the family (the SAE is trained above, beside the family)
        ("Matryoshka analysis", lambda: get_matryoshka_analysis(preset, store)),
        # notebook 07 / the results file: do the attribution graphs predict interventions?
        ("circuit interventions", lambda: get_intervention_agreement(preset, store)),
        # notebook 07: the transcoder's features on the offline autointerp and the proxies, beside A/1's
        ("transcoder autointerp", lambda: get_transcoder_interp(preset, store)),
        # notebook 08: every measure for every dictionary and control, on fewer tokens and units than A/1's tables
        ("evaluation panel", lambda: get_evaluation_panel(preset, store)),
    ]
    return stages


# What each stage needs built first: with --jobs N independent stages run side by side.
STAGE_DEPS = {
    "corpus": (), "tokenizer": ("corpus",), "tokens": ("tokenizer",),
    "model A": ("tokens",), "model B": ("tokens",),
    "SAE A/1": ("model A",), "SAE B/1": ("model B",), "SAE A/1 TopK": ("model A",), "SAE A/1 paper2023": ("model A",),
    "SAE A lambda sweep": ("model A",), "SAE family A": ("SAE A/1",),
    "SAE A/1 seeds": ("model A",), "SAE A/1 frozen decoder": ("model A",), "PCA A": ("model A",),
    # after A/1: its metrics give A/1's FVU of the MLP output, and A/1's ablation baselines are reused
    "transcoder A": ("SAE A/1",),
    # after the stages whose artifacts it reuses: the TopK run and seed 0 of the seed runs (its batchtopk
    # entry) always, the paper2023 run where side runs train on all of sae_tokens (paper); side by side,
    # --jobs 2 would wait on their locks
    "SAE recipes": ("model A", "SAE A/1 paper2023", "SAE A/1 TopK", "SAE A/1 seeds"),
    "index A/1": ("SAE A/1",), "index B/1": ("SAE B/1",),
    "SAE randomized": ("model A",), "index randomized": ("SAE randomized", "tokens"),
    "index A/1 paper2023": ("SAE A/1 paper2023",), "proxy table": ("index A/1",),
    "proxy table paper2023": ("index A/1 paper2023",),
    "autointerp offline": ("index A/1", "index randomized", "index A/1 paper2023"),
    "autointerp output side": ("index A/1", "index randomized", "index A/1 paper2023"),
    "autointerp output side, every dictionary": ("SAE A/1", "SAE A/1 paper2023", "SAE randomized",
                                                 "SAE A/1 frozen decoder", "PCA A"),
    "feature catalog": ("SAE A/1",), "universality comparison": ("SAE A/1", "SAE B/1"),
    "family analysis": ("SAE family A",), "family UMAP": ("family analysis",),
    "Matryoshka A": ("model A",), "Matryoshka analysis": ("Matryoshka A", "family analysis"),
    "circuit interventions": ("transcoder A",),
    "transcoder autointerp": ("transcoder A", "autointerp offline", "proxy table"),
    "evaluation panel": ("SAE A/1", "SAE A/1 paper2023", "SAE randomized", "SAE A/1 frozen decoder", "PCA A",
                         "SAE A/1 seeds", "universality comparison", "autointerp offline"),
}
