"""The feature atlas (mono_utils.atlas.site): data gathering on the smoke preset, the files it writes."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mono_utils import cli
from mono_utils.atlas import site
from mono_utils.pipeline.indexes import get_index
from mono_utils.pipeline.models import get_model, get_tokenizer, get_tokens
from mono_utils.pipeline.saes import get_sae
from mono_utils.core.model import direction_logit_weights, model_config_of
from mono_utils.core.tokenizer import readable_tokens, str_tokens
from mono_utils.features.dashboards import dashboard_data
from mono_utils.features.widgets import units_for_token
from mono_utils.store.artifacts import ArtifactStore
from mono_utils.universality.cache import get_comparison


def read_data(path: Path):
    """(key, value) of a data file's first line: ``ATLAS.put(key, value);``."""
    text = path.read_text(encoding="utf-8").split("\n")[0] + "\n"
    m = re.fullmatch(r'ATLAS\.put\(("[^"]*"),(.*)\);\n', text, re.S)
    assert m, f"{path} is not a data script"
    return json.loads(m.group(1)), json.loads(m.group(2))


@pytest.fixture(scope="module")
def smoke_a(smoke_preset, smoke_store):
    """Model A, tokenizer, SAE A/1 and index A/1 of the smoke build."""
    model = get_model(smoke_preset, smoke_store, which="A", progress=False)
    tok = get_tokenizer(smoke_preset, smoke_store)
    sae = get_sae(smoke_preset, smoke_store, which="A", progress=False)
    index = get_index(smoke_preset, smoke_store, which="A", sae=sae, model=model, progress=False)
    return model, tok, sae, index


def _logits(model, sae=None):
    dirs = sae.W_dec_raw.detach() if sae is not None else torch.eye(model_config_of(model).d_mlp)
    with torch.no_grad():
        return direction_logit_weights(model, dirs).numpy()


@pytest.mark.parametrize("kind", ["feature", "neuron"])
def test_unit_record_matches_notebook_dashboard(smoke_a, kind):
    """A unit's page shows what notebook 02's dashboard shows (its ablation underlines aside)."""
    model, tok, sae, index = smoke_a

    def shown(i: int) -> str:
        return readable_tokens(tok, [i])[0]
    L = _logits(model, sae if kind == "feature" else None)
    ultra = index.ultralow_mask(kind)
    live = index.live_units(kind)
    dead = np.flatnonzero(index.dead_mask(kind))
    units = [int(live[0]), int(live[len(live) // 2]), int(np.argmax(index.density(kind)))]
    units += [int(dead[0])] if len(dead) else []
    for u in units:
        rec = site.unit_record(index, kind, u, L[u], bool(ultra[u]))
        ref = dashboard_data(index, kind, u, model, tok, sae, ablation=False)
        assert rec["u"] == u and rec["n"] == ref["count"]
        assert rec["d"] == pytest.approx(ref["density"], rel=1e-3)
        assert rec["mx"] == pytest.approx(ref["max_act"], rel=1e-3)
        assert rec["flag"] == (1 if ref["dead"] else 2 if ref["ultralow"] else 0)
        assert rec["ah"] == ref["act_hist"]["counts"]
        assert rec["lh"] == ref["logit_hist"]["counts"]
        # the page shows a token alone as decodeRun shows it (a stray byte as ‹xx›): readable_tokens
        assert [shown(i) for i, _ in rec["lt"]] == [s for s, _ in ref["logits_top"]]
        assert [shown(i) for i, _ in rec["lb"]] == [s for s, _ in ref["logits_bottom"]]
        assert [w for _, w in rec["lt"]] == pytest.approx([w for _, w in ref["logits_top"]], rel=1e-3, abs=1e-6)
        assert rec["dc"] == [d["count"] for d in ref["domains"]]

        def same(ctx, r):
            row, pos, start, act, ids, q = ctx
            assert (row, pos, start) == (r["row"], r["pos"], r["start"])
            assert act == pytest.approx(r["act"], rel=1e-3)
            assert readable_tokens(tok, list(ids)) == r["tokens"]   # the run, as the page decodes it
            # per-mille of the unit's max: the shading the notebook draws, to 1/1000
            assert np.allclose(np.array(q) / 1000 * ref["max_act"], r["acts"], atol=ref["max_act"] / 1000 + 1e-6)
        assert len(rec["top"]) == len(ref["top"])
        for c, r in zip(rec["top"], ref["top"]):
            same(c, r)
        assert len(rec["iv"]) == len(ref["intervals"])
        for (lo, hi, n, ex), r in zip(rec["iv"], ref["intervals"]):
            assert (n, len(ex)) == (r["n"], len(r["examples"]))
            assert lo == pytest.approx(r["lo"], rel=1e-3, abs=1e-6) and hi == pytest.approx(r["hi"], rel=1e-3, abs=1e-6)
            for c, rr in zip(ex, r["examples"]):
                same(c, rr)


def test_token_table_is_the_mean_over_every_occurrence(smoke_a):
    model, tok, sae, index = smoke_a
    table = site.token_table(index, "feature", k=5)
    flat = index.tokens.reshape(-1)
    occ = np.bincount(flat.astype(np.int64))
    # a frequent token and a rare one, checked against the dense activations
    ids = [int(np.argmax(occ))] + [int(t) for t in np.flatnonzero(occ == 3)[:1]]
    dense = np.stack([index.unit_acts("feature", u).reshape(-1) for u in range(index.n_units("feature"))], 1)
    for t in ids:
        where = flat == t
        mean = dense[where].mean(0)
        want = [u for u in np.lexsort((np.arange(len(mean)), -mean))[:5] if mean[u] > 0]
        rows = table[str(t)]
        assert [r[0] for r in rows] == [int(u) for u in want]
        for u, m, f in rows:
            # the table keeps 3 significant figures: up to half a unit of the third digit (5e-3 relative)
            assert m == pytest.approx(mean[u], rel=5.01e-3)
            assert f == pytest.approx((dense[where, u] > 0).mean(), abs=1e-3)
        assert table["_occ"][str(t)] == int(occ[t])
    # the notebook widget (model forward passes on up to 256 occurrences) ranks the same unit first
    t = next(int(t) for t in np.argsort(-occ) if occ[t] <= 256 and str_tokens(tok, [t])[0].strip())
    widget = units_for_token(index, model, sae, tok, str_tokens(tok, [t])[0], k=3)
    assert widget[0]["unit"] in [r[0] for r in table[str(t)][:3]]


def test_parse_sae_option(smoke_preset):
    p = smoke_preset
    assert site.parse_sae_option("TopK", p) == "topk"
    assert site.parse_sae_option("paper2023", p) == site.parse_sae_option("A/1 paper2023", p) == "paper2023"
    assert site.parse_sae_option("b/1", p) == "B/1"
    assert site.parse_sae_option(f"A/{p.sae_main}", p) == "A/1"
    assert site.parse_sae_option(f"A/{p.sae_sizes[0]}", p) == f"A/{p.sae_sizes[0]}"
    assert site.parse_sae_option("family", p) == "family"
    with pytest.raises(ValueError, match="family member"):
        site.parse_sae_option("A/12345", p)
    with pytest.raises(ValueError, match="unknown --sae"):
        site.parse_sae_option("C/1", p)


def test_assets_request_nothing_outside_the_folder():
    """No CDN, no absolute URL: every src/href of the shipped files is relative."""
    for name in site.ASSET_FILES:
        text = (site.ASSETS / name).read_text(encoding="utf-8")
        urls = re.findall(r"https?://[^\s'\"]+|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I)
        assert [u for u in urls if u != "http://www.w3.org/2000/svg"] == [], name   # the SVG namespace is a name, not a request
        assert not re.search(r"@import|url\(", text), name
        for ref in re.findall(r'(?:src|href)="([^"]+)"', text):
            assert not re.match(r"^(?:[a-z]+:|/)", ref), f"{name}: {ref} is not relative"


def test_out_folder_is_never_a_foreign_one(tmp_path):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an atlas"):
        site._prepare_out(foreign)
    assert (foreign / "mine.txt").read_text() == "keep me"
    f = tmp_path / "a-file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        site._prepare_out(f)


@pytest.fixture(scope="module")
def smoke_atlas(smoke_preset, smoke_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("atlas") / "site"
    report = site.build_atlas(smoke_preset, out, saes=("B/1",), store=smoke_store, progress=False)
    return out, report


@pytest.mark.slow
def test_build_atlas_writes_every_unit_and_joins(smoke_atlas, smoke_preset, smoke_store):
    out, report = smoke_atlas
    assert (out / "index.html").exists() and (out / site.MARKER).exists()
    assert report["bytes"] == site.folder_bytes(out) - (out / site.MARKER).stat().st_size
    _, meta = read_data(out / "data" / "meta.js")
    assert [s["key"] for s in meta["sets"]] == ["A1", "AN", "B1", "BN"]
    _, vocab = read_data(out / "data" / "vocab.js")
    # the second line: each token's bytes, which decode a row of tokens as the tokenizer does
    vhex = json.loads(re.fullmatch(r'ATLAS\.put\("vocabhex",(.*)\);', (out / "data" / "vocab.js").read_text(
        encoding="utf-8").split("\n")[1]).group(1))
    tok = get_tokenizer(smoke_preset, smoke_store)
    row = get_tokens(smoke_preset, smoke_store).tokens[0].tolist()
    assert b"".join(bytes.fromhex(vhex[i]) for i in row).decode("utf-8", "replace") == \
        tok.decode(row, clean_up_tokenization_spaces=False)
    recs = {}
    for s in meta["sets"]:
        key, units = read_data(out / "data" / s["key"] / "units.js")
        assert key == f"{s['key']}/units" and units["n_units"] == s["n_units"]
        assert all(len(units["cols"][c]) == s["n_units"] for c in ("n", "d", "mx", "flag", "lab", "dc", "sc"))
        seen = []
        for f in sorted((out / "data" / s["key"] / "d").glob("*.js")):
            k, shard = read_data(f)
            assert k == f"{s['key']}/d/{int(f.stem)}"
            seen += [r["u"] for r in shard]
            recs.update({(s["key"], r["u"]): r for r in shard})
        assert seen == list(range(s["n_units"])), s["key"]
        _, tokens = read_data(out / "data" / s["key"] / "tokens.js")
        assert all(int(t) < len(vocab) for t in tokens["_occ"])
    # A<->B: each A/1 feature names the B/1 feature it matches, B/1 lists it back
    res = get_comparison(smoke_preset, smoke_store, progress=False)
    for i in np.flatnonzero(res.features.match >= 0)[:50]:
        ab = recs[("A1", int(i))]["x"]["ab"]
        j = int(res.features.match[i])
        assert (ab["to"], ab["unit"]) == ("B1", j) and ab["corr"] == pytest.approx(res.features.max_corr[i], abs=1e-3)
        assert int(i) in [u for u, _ in recs[("B1", j)]["x"]["ba"]["units"]] or recs[("B1", j)]["x"]["ba"]["n"] > 10
    excluded = np.flatnonzero(res.features.match < 0)
    if len(excluded):
        assert recs[("A1", int(excluded[0]))]["x"]["ab"]["excluded"]
    # the family: A/1's parent lies in the next smaller size, its children in the next larger
    fam = [r["x"]["fam"] for (k, _), r in recs.items() if k == "A1" and "fam" in r.get("x", {})]
    assert len(fam) == smoke_preset.sae_main
    with_parent = [f for f in fam if "parent" in f]
    assert with_parent and all(f["parent"][0] == site._family_key(f["sizes"][f["level"] - 1], smoke_preset)
                               for f in with_parent)
    # autointerp: the live A/1 features carry the offline explanation and score; steering: every feature
    scored = [r["x"]["ai"] for (k, _), r in recs.items() if k == "A1" and "ai" in r.get("x", {})]
    assert scored and all(isinstance(a["expl"], str) for a in scored)
    assert all("st" in recs[("A1", u)]["x"] for u in range(smoke_preset.sae_main))
    # a second build replaces the first in place
    again = site.build_atlas(smoke_preset, out, store=smoke_store, progress=False)
    _, meta2 = read_data(out / "data" / "meta.js")
    assert [s["key"] for s in meta2["sets"]] == ["A1", "AN"] and not (out / "data" / "B1").exists()
    assert again["bytes"] < report["bytes"]
    assert not list(out.parent.glob(".site.*"))


def test_cli_rejects_bad_options_before_building(tmp_path, capsys):
    store = tmp_path / "store"
    assert cli.main(["atlas", "--preset", "smoke", "--sae", "C/1", "--artifacts", str(store)]) == 1
    assert "unknown --sae 'C/1'" in capsys.readouterr().err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert cli.main(["atlas", "--preset", "smoke", "--out", str(foreign), "--artifacts", str(store)]) == 1
    assert "is not an atlas" in capsys.readouterr().err
    assert not store.exists(), "nothing may be built when the options are wrong"


@pytest.mark.slow
def test_cli_writes_an_atlas(smoke_store, tmp_path, capsys):
    out = tmp_path / "atlas"
    assert cli.main(["atlas", "--preset", "smoke", "--out", str(out), "--artifacts", str(smoke_store.root)]) == 0
    printed = capsys.readouterr().out
    assert (out / "index.html").as_uri() in printed and "MB in" in printed
    assert sorted(p.name for p in (out / "data").iterdir()) == ["A1", "AN", "meta.js", "vocab.js"]


def test_read_only_store_builds_nothing(tmp_path):
    store = site.ReadOnlyStore(ArtifactStore(tmp_path / "store"))
    calls = []
    with pytest.raises(site.NotBuilt, match="not built"):
        store.get_or_build("result", "x", {"a": 1}, lambda tmp: calls.append(tmp))
    assert calls == [] and not (tmp_path / "store" / "result" / "x").exists()
    ArtifactStore(tmp_path / "store").get_or_build("result", "x", {"a": 1}, lambda tmp: (tmp / "f").write_text("1"))
    assert (store.get_or_build("result", "x", {"a": 1}, lambda tmp: calls.append(tmp)) / "f").read_text() == "1"
    assert calls == []
    with pytest.raises(ValueError, match="not built.*--no-build"):
        site.build_atlas("smoke", tmp_path / "atlas", store=ArtifactStore(tmp_path / "empty"), build_missing=False)
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").rglob("*.json"))


@pytest.mark.slow
def test_no_build_leaves_out_what_is_not_built(smoke_preset, smoke_store, tmp_path):
    """--no-build on a store without the family analysis: the atlas is written, the family named as left out."""
    import shutil
    copy = tmp_path / "store"
    shutil.copytree(smoke_store.root, copy, ignore=shutil.ignore_patterns("splitting-*", ".lock-*", ".tmp-*"))
    before = sorted(p.name for p in copy.rglob("*"))
    rep = site.build_atlas(smoke_preset, tmp_path / "atlas", store=ArtifactStore(copy), progress=False,
                           build_missing=False)
    assert rep["missing"] == ["family"]
    assert sorted(p.name for p in copy.rglob("*") if not p.name.startswith(".lock-")) == \
        [n for n in before if not n.startswith(".lock-")]
    _, meta = read_data(tmp_path / "atlas" / "data" / "meta.js")
    assert "not built" in meta["knows"]["family"]["missing"] and "fam" not in json.dumps(meta["knows"]["universality"])
