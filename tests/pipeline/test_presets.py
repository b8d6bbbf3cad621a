import pytest

from mono_utils.pipeline.presets import PRESETS, get_preset


def test_known_presets_validate():
    for name in PRESETS:
        assert get_preset(name).name == name


def test_env_overrides(monkeypatch):
    monkeypatch.setenv("MONO_PRESET", "smoke")
    assert get_preset("default").name == "smoke"


def test_unknown_preset_names_the_choices(monkeypatch):
    monkeypatch.delenv("MONO_PRESET", raising=False)
    with pytest.raises(ValueError, match="unknown preset 'huge'.*smoke, default, paper"):
        get_preset("huge")


@pytest.mark.parametrize("field,value", [("d_mlp", 0), ("vocab_size", -5), ("sae_main", 0), ("l1_coeff", 0.0),
                                         ("model_tokens", -1)])
def test_non_positive_sizes_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        get_preset("smoke").replace(**{field: value})


def test_default_has_the_papers_shape():
    p = get_preset("default")
    assert (p.d_model, p.d_mlp, p.n_heads, p.n_ctx, p.vocab_size) == (128, 512, 4, 128, 4096)
    assert p.sae_main == 4096 and 512 in p.sae_sizes and 8192 in p.sae_sizes
    assert max(get_preset("paper").sae_sizes) == 131072


def test_paper_dry_has_the_papers_shapes_and_smaller_budgets():
    """Issue 21: the dry run differs from the paper preset only in its token budgets (and what
    they force: the SAE batch and lr), never in a shape or a policy."""
    from mono_utils.pipeline.presets import DRY_EVAL_SCALE, DRY_SCALE
    paper, dry = get_preset("paper"), get_preset("paper-dry")
    for f in ("vocab_size", "d_model", "n_heads", "d_mlp", "n_ctx", "sae_sizes", "sae_main", "topk_k",
              "l1_coeff", "model_batch", "sae_schedule", "sae_recipe", "side_runs_full", "autointerp_units", "seeds"):
        assert getattr(dry, f) == getattr(paper, f), f
    assert max(dry.sae_sizes) == 131072
    assert dry.sae_tokens < paper.sae_tokens // DRY_SCALE and dry.model_tokens <= paper.model_tokens // DRY_SCALE
    for f in ("eval_tokens", "density_tokens", "index_tokens", "universality_tokens"):
        assert getattr(dry, f) == getattr(paper, f) // DRY_EVAL_SCALE, f


def test_sae_recipe_is_validated_and_names_the_choices():
    with pytest.raises(ValueError, match="sae_recipe must be one of .*batchtopk"):
        get_preset("smoke").replace(sae_recipe="gated")


def test_a1_takes_the_presets_recipe_and_the_papers_stays_addressable():
    """Issue 16: get_sae(preset) with no recipe is A/1 of preset.sae_recipe (BatchTopK on default,
    at k = topk_k); the paper's recipe is the same artifact whether asked for by name or by
    architecture, and on the paper preset it is A/1 itself."""
    from mono_utils.pipeline.saes import sae_artifact_config
    from mono_utils.store.artifacts import config_hash
    p = get_preset("default")
    cfg, _, config, name = sae_artifact_config(p, which="A")
    assert p.sae_recipe == "batchtopk" and cfg.recipe_name == "batchtopk" and cfg.k == p.topk_k
    assert name == "saeA-4096-batchtopk-default"
    paper = [config_hash(sae_artifact_config(p, which="A", **kw)[2]) for kw in
             (dict(recipe="paper2023"), dict(architecture="relu"))]
    assert paper[0] == paper[1] != config_hash(config)
    pp = get_preset("paper")
    assert pp.sae_recipe == "paper2023"
    assert config_hash(sae_artifact_config(pp, which="A")[2]) == config_hash(
        sae_artifact_config(pp, which="A", recipe="paper2023")[2])


def test_a_lambda_on_a_k_recipe_is_refused_and_the_sweep_stays_the_papers(monkeypatch):
    """A lambda passed to an SAE of a k recipe would be ignored: the SAE built would not be the one
    asked for (the lambda sweep once trained three identical BatchTopK SAEs that way)."""
    from mono_utils.pipeline import saes
    p = get_preset("default")
    with pytest.raises(ValueError, match="no effect on a batchtopk SAE.*recipe='paper2023'"):
        saes.sae_artifact_config(p, which="A", l1_coeff=1e-3)
    seen = []
    monkeypatch.setattr(saes, "get_sae", lambda *a, **kw: seen.append(kw) or kw)
    saes.get_lambda_sweep(p)
    assert [kw["recipe"] for kw in seen] == ["paper2023"] * len(saes.SWEEP_MULTIPLIERS)
    assert sorted(kw["l1_coeff"] for kw in seen) == sorted(p.l1_coeff * m for m in saes.SWEEP_MULTIPLIERS)
