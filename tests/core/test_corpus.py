import json

import pytest

from mono_utils.core import corpus as data


@pytest.fixture(scope="module")
def small_docs():
    return data.build_documents(600_000, seed=0)   # the smoke preset's size


def test_corpus_is_deterministic():
    a = data.build_documents(100_000, seed=3)
    again = data.build_documents(100_000, seed=3)
    assert data.manifest(again)["sha256"] == data.manifest(a)["sha256"]
    other = data.build_documents(100_000, seed=4)
    assert data.manifest(other)["sha256"] != data.manifest(a)["sha256"]


def test_every_domain_and_key_subdomains_present(small_docs):
    domains = {d.domain for d in small_docs}
    assert domains == set(data.DOMAIN_SHARES)
    subs = {d.subdomain for d in small_docs}
    for needed in ["python", "dna", "base64", "http", "json_records", "arithmetic", "nutrition", "hebrew", "arabic"]:
        assert needed in subs, needed


@pytest.mark.parametrize("size", [200_000, 600_000])
def test_small_corpora_hold_every_script(size):
    """Even a small corpus (it keeps only its sources' first documents) has all seven scripts."""
    docs = small_docs_cache(size)
    subs = {d.subdomain for d in docs if d.domain == "multilingual"}
    for script in ["hebrew", "arabic", "cyrillic", "chinese", "japanese", "greek", "thai"]:
        assert script in subs, (size, script, sorted(subs))


_CACHE = {}


def small_docs_cache(size):
    if size not in _CACHE:
        _CACHE[size] = data.build_documents(size, seed=0)
    return _CACHE[size]


def test_labels_match_content(small_docs):
    for d in small_docs:
        if d.subdomain == "dna":
            body = "".join(d.text.splitlines()[1:])
            assert set(body) <= set("ACGT")
        if d.domain == "multilingual":
            assert data.script_of(d.text) == d.subdomain


def test_script_detection():
    assert data.script_of("שלום עולם") == "hebrew"
    assert data.script_of("مرحبا بالعالم") == "arabic"
    assert data.script_of("Привет мир") == "cyrillic"
    assert data.script_of("こんにちは世界") == "japanese"
    assert data.script_of("你好世界") == "chinese"
    assert data.script_of("hello") == "latin"


def test_manifest_counts(small_docs):
    m = data.manifest(small_docs, [1] * len(small_docs))
    assert m["documents"] == len(small_docs) and m["tokens"] == len(small_docs)
    assert sum(v["documents"] for v in m["domains"].values()) == len(small_docs)


def test_user_files(tmp_path):
    (tmp_path / "a.txt").write_text("hello world\nsecond line", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "x y z", "domain": "mine"}) + "\n", encoding="utf-8")
    docs = data.load_text_files([tmp_path / "a.txt", tmp_path / "b.jsonl"])
    assert [d.domain for d in docs] == ["user", "mine"]


def test_bad_user_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_text_files([tmp_path / "missing.txt"])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8.*re-save"):
        data.load_text_files([tmp_path / "latin1.txt"])
    (tmp_path / "empty.txt").write_text("   \n", encoding="utf-8")
    with pytest.raises(ValueError, match="corpus is empty"):
        data.load_text_files([tmp_path / "empty.txt"])
    (tmp_path / "bad.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        data.load_text_files([tmp_path / "bad.jsonl"])


def test_zero_size_corpus_rejected():
    with pytest.raises(ValueError, match="positive"):
        data.build_documents(0)


def test_hub_dataset_offline_fails_fast(monkeypatch):
    monkeypatch.setattr(data, "hub_reachable", lambda timeout=2.0: False)
    with pytest.raises(ConnectionError, match="not reachable.*load_text_files"):
        data.load_hf_dataset("NeelNanda/pile-10k")


# ---------------------------------------------------------------- independent of the machine
def _requirement_names() -> set[str]:
    from pathlib import Path
    names = set()
    for line in (Path(__file__).parents[2] / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            names.add(line.split("==")[0].strip().lower().replace("_", "-"))
    return names


def test_every_corpus_distribution_is_pinned():
    pinned = _requirement_names()
    loose = [d for d in data.CORPUS_DISTRIBUTIONS if d.lower().replace("_", "-") not in pinned]
    assert not loose, f"the corpus reads {loose}, not pinned in requirements.txt: pin them there"
    assert all(v is not None for v in data.source_versions().values())


def test_no_file_outside_the_pinned_sources_and_the_stdlib():
    """The base interpreter's site-packages, pip's editable finder and unpinned packages are not read."""
    import sysconfig
    from pathlib import Path
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    names = [n for s in (data.STDLIB, *data.CORPUS_DISTRIBUTIONS) for n, _ in data._listing(s, ("*.py",))]
    assert len(names) > 1000
    assert not [n for n in names if "__editable__" in n or n.startswith(("pip:", "setuptools:"))]
    assert not [n for n in names if n.startswith("stdlib/") and ("site-packages" in n or "/test/" in n)]
    # the names are relative: where the environment lives is not part of them
    assert not [n for n in names if str(stdlib) in n or n.split(":", 1)[-1].startswith("/")]


def test_an_extra_file_moves_only_itself(monkeypatch):
    """The order is a seeded hash of each file's name: one file more leaves the others' order alone."""
    import random
    from pathlib import Path
    listing = {"a": tuple((f"a:{i}.py", Path(f"/x/{i}.py")) for i in range(200))}
    monkeypatch.setattr(data, "_listing", lambda source, patterns: listing[source])
    before = data._files(["a"], ("*.py",), random.Random(1))
    listing["a"] = listing["a"] + (("a:extra.py", Path("/x/extra.py")),)
    after = data._files(["a"], ("*.py",), random.Random(1))
    assert [p for p in after if p.name != "extra.py"] == before
    assert data._files(["a"], ("*.py",), random.Random(2)) != after      # still seeded
    # an absolute prefix does not enter the order: the same names under another root, same order
    listing["a"] = tuple((n, Path("/elsewhere") / p.name) for n, p in listing["a"])
    moved = data._files(["a"], ("*.py",), random.Random(1))
    assert [p.name for p in moved] == [p.name for p in after]


def test_a_missing_corpus_distribution_names_the_fix(monkeypatch):
    data._listing.cache_clear()
    with pytest.raises(RuntimeError, match="make env"):
        data._listing("no-such-distribution-xyz", ("*.py",))
