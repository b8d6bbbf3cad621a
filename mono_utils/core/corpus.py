"""An offline "mini-Pile": documents tagged by domain, built from what pip put on disk.

Sources (all local): Python source and docstrings, package READMEs, ``pydoc_data`` topics,
license files, gettext catalogs and faker/babel text in many scripts, JSON/JS/CSS/HTML shipped
by jupyterlab and plotly, C/C++ headers shipped by torch, and generated text (DNA, base64,
HTTP, JSON records, arithmetic, nutrition labels). Every choice is seeded, so the same seed,
the same pinned packages and the same Python give the same bytes, wherever they are installed.

What makes that true (a corpus that changed with the machine once made every default artifact
differ under the same config hash):
- files come only from the standard library (its own modules: no ``site-packages``, no test
  suite) and from the distributions in ``CORPUS_DISTRIBUTIONS``, each pinned in requirements.txt,
  read through their RECORD; nothing else installed beside them (a linter, pip's editable-install
  finder, the base interpreter's packages) is read;
- a file is named by where it sits inside its source (``stdlib/json/decoder.py``,
  ``torch:torch/nn/functional.py``), never by its absolute path;
- the sampling order is a seeded hash of each file's name, not one shuffle of the whole listing,
  so one more or one fewer file moves only itself.
"""
from __future__ import annotations

import functools
import gettext
import hashlib
import importlib.metadata
import json
import os
import random
import re
import socket
import sys
import sysconfig
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..store.artifacts import atomic_write_text
from . import generated

# token shares asked for by the spec, and a rough bytes-per-token to turn them into bytes
DOMAIN_SHARES = {"code": 0.30, "english": 0.20, "multilingual": 0.16, "web": 0.08,
                 "cpp": 0.06, "legal": 0.02, "generated": 0.18}
BYTES_PER_TOKEN = {"code": 3.2, "english": 3.8, "multilingual": 2.4, "web": 2.8,
                   "cpp": 3.3, "legal": 4.0, "generated": 2.0}
SCRIPTS = ["hebrew", "arabic", "cyrillic", "chinese", "japanese", "greek", "thai"]
MAX_DOC_CHARS = 6000


@dataclass
class Document:
    text: str
    domain: str      # one of DOMAIN_SHARES
    subdomain: str   # finer label: "python", "hebrew", "dna", ...
    source: str      # where it came from (package or generator)

    def to_dict(self) -> dict:
        return {"text": self.text, "domain": self.domain, "subdomain": self.subdomain,
                "source": self.source}


# The distributions whose files the corpus reads: all pinned in requirements.txt (a test checks it),
# so that what else is installed beside them changes nothing.
CORPUS_DISTRIBUTIONS = (
    "torch", "transformer-lens", "transformers", "circuitsvis", "jupyterlab", "jupyter-server", "nbconvert",
    "ipywidgets", "anywidget", "plotly", "pandas", "numpy", "tokenizers", "safetensors", "tqdm", "Faker",
    "babel", "pycountry", "Django", "scipy", "scikit-learn", "umap-learn", "psutil", "nbclient", "nbformat",
    "ipykernel", "anthropic", "openai", "voila", "playwright", "pytest", "pytest-timeout")
STDLIB = "stdlib"
# parts of the standard library's folder that are not the standard library, or that distributions
# package differently (Debian ships the test suite apart)
_STDLIB_SKIP = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


# ------------------------------------------------------------------ helpers
def site_packages() -> list[Path]:
    paths = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])}
    return sorted(p for p in paths if p.exists())


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _package_of(path: Path) -> str:
    for root in site_packages() + [stdlib_dir()]:
        try:
            return path.relative_to(root).parts[0]
        except ValueError:
            continue
    return path.parent.name


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def _files(sources: Iterable[str], patterns: tuple[str, ...], rng: random.Random | None = None) -> list[Path]:
    """Files matching ``patterns`` (on the file name) in ``sources``, in a seeded order.

    A source is ``"stdlib"`` or a distribution's name, optionally with a path prefix inside
    site-packages (``"torch:torch/include/"``). With ``rng`` the order is a hash of each file's
    name salted by one draw of ``rng``: a seeded shuffle that an added or missing file does not
    reorder; without, the names' order.
    """
    named = [pair for source in sources for pair in _listing(source, patterns)]
    if rng is None:
        named.sort()
    else:
        salt = rng.getrandbits(64)
        named.sort(key=lambda pair: hashlib.sha256(f"{salt}:{pair[0]}".encode()).digest())
    return [path for _, path in named]


@functools.lru_cache(maxsize=128)
def _listing(source: str, patterns: tuple[str, ...]) -> tuple[tuple[str, Path], ...]:
    """(name, path) of the matching files of one source; names say where a file sits in its source."""
    out = []
    if source == STDLIB:
        root = stdlib_dir()
        for pat in patterns:
            for p in root.rglob(pat):
                rel = p.relative_to(root)
                if p.is_file() and not _STDLIB_SKIP.intersection(rel.parts[:-1]):
                    out.append((f"{STDLIB}/{rel.as_posix()}", p))
        return tuple(sorted(set(out)))
    dist_name, _, prefix = source.partition(":")
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"the offline corpus reads the files of {dist_name!r}, which is not installed: "
                           f"run `make env` (it installs requirements.txt)") from None
    for f in dist.files or ():
        rel = f.as_posix()
        if rel.startswith("..") or not rel.startswith(prefix):
            continue  # data files outside site-packages (share/jupyter/...), or outside the asked folder
        if any(Path(rel).match(pat) for pat in patterns):
            p = Path(dist.locate_file(f))
            if p.is_file():
                out.append((f"{dist_name}:{rel}", p))
    return tuple(sorted(set(out)))


def _chunks(text: str, limit: int = MAX_DOC_CHARS) -> list[str]:
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    out, start = [], 0
    while start < len(text):
        end = text.rfind("\n", start, start + limit)
        end = start + limit if end <= start else end
        out.append(text[start:end].strip())
        start = end
    return [c for c in out if c]


def script_of(text: str) -> str:
    """The dominant non-Latin script of a text, or "latin"."""
    counts: dict[str, int] = defaultdict(int)
    for ch in text:
        o = ord(ch)
        if 0x0590 <= o <= 0x05FF:
            counts["hebrew"] += 1
        elif 0x0600 <= o <= 0x06FF or 0x0750 <= o <= 0x077F or 0xFB50 <= o <= 0xFEFF:
            counts["arabic"] += 1
        elif 0x0400 <= o <= 0x04FF:
            counts["cyrillic"] += 1
        elif 0x0370 <= o <= 0x03FF:
            counts["greek"] += 1
        elif 0x0E00 <= o <= 0x0E7F:
            counts["thai"] += 1
        elif 0x3040 <= o <= 0x30FF:
            counts["japanese"] += 3  # kana marks Japanese even amid kanji
        elif 0x4E00 <= o <= 0x9FFF:
            counts["chinese"] += 1
        elif ch.isalpha():
            counts["latin"] += 1
    if not counts:
        return "latin"
    best = max(sorted(counts), key=counts.get)
    if best == "chinese" and counts.get("japanese"):
        return "japanese"
    return best


# ------------------------------------------------------------------ sources
def python_code(rng: random.Random) -> Iterable[Document]:
    for path in _files((STDLIB, *CORPUS_DISTRIBUTIONS), ("*.py",), rng):
        text = _read_text(path)
        if text and len(text) > 200:
            for c in _chunks(text):
                yield Document(c, "code", "python", _package_of(path))


def english_prose(rng: random.Random) -> Iterable[Document]:
    try:
        from pydoc_data.topics import topics  # lazy: only to build the corpus
        for key in sorted(topics):
            for c in _chunks(topics[key]):
                yield Document(c, "english", "python_docs", "pydoc_data")
    except ImportError:  # pragma: no cover
        pass
    for path in _files(CORPUS_DISTRIBUTIONS, ("METADATA",), rng):
        text = _read_text(path)
        if text and "\n\n" in text:
            body = text.split("\n\n", 1)[1]
            for c in _chunks(body):
                if script_of(c) == "latin":
                    yield Document(c, "english", "readme", path.parent.name.split("-")[0])
    for path in _files((STDLIB, *CORPUS_DISTRIBUTIONS), ("*.py",), rng):
        text = _read_text(path)
        if not text:
            continue
        # a regex over triple-quoted strings: ~50x faster than ast, and docstrings are what it finds
        docs = [d.strip() for d in _DOCSTRING.findall(text)]
        docs = [d for d in docs if len(d) > 80 and d.count(" ") > len(d) / 12 and script_of(d) == "latin"]
        if docs:
            yield Document("\n\n".join(docs)[:MAX_DOC_CHARS], "english", "docstring", _package_of(path))


_DOCSTRING = re.compile(r'"""(.*?)"""', re.S)


def legal_text(rng: random.Random) -> Iterable[Document]:
    seen = set()
    for path in _files(CORPUS_DISTRIBUTIONS, ("LICENSE*", "COPYING*", "LICENCE*")):
        text = _read_text(path)
        if text and len(text) > 300:
            h = hashlib.sha1(text.encode()).hexdigest()
            if h not in seen:
                seen.add(h)
                for c in _chunks(text):
                    yield Document(c, "legal", "license", _package_of(path))


def multilingual(rng: random.Random) -> Iterable[Document]:
    """Translation catalogs and faker text, interleaved (and faker's locales in turn), so that
    even a small corpus, which keeps only the first documents, holds every script."""
    catalogs, fakes = _catalog_docs(), _faker_docs(rng)
    live = [catalogs, fakes]
    while live:
        for it in list(live):
            try:
                yield next(it)
            except StopIteration:
                live.remove(it)


def _catalog_docs() -> Iterable[Document]:
    for path in _files(CORPUS_DISTRIBUTIONS, ("*.mo",)):
        try:
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog  # noqa: SLF001 - stdlib reader
        except Exception:  # noqa: BLE001 - a damaged catalog is skipped
            continue
        strings = [v for k, v in sorted(catalog.items(), key=lambda kv: str(kv[0])) if k and isinstance(v, str)]
        text = "\n".join(strings)
        script = script_of(text)
        if script != "latin" and len(text) > 100:
            for c in _chunks(text, 1200):
                yield Document(c, "multilingual", script, _package_of(path))


FAKER_LOCALES = ["he_IL", "ar_AA", "ru_RU", "uk_UA", "zh_CN", "ja_JP", "el_GR", "th_TH", "fa_IR", "bg_BG"]


def _faker_docs(rng: random.Random, per_locale: int = 300) -> Iterable[Document]:
    try:
        from faker import Faker  # lazy: heavy: only to build the corpus
    except ImportError:  # pragma: no cover
        return
    fakers = []
    for locale in FAKER_LOCALES:
        fake = Faker(locale)
        fake.seed_instance(rng.randrange(2**31))
        fakers.append((locale, fake))
    for _ in range(per_locale):
        for locale, fake in fakers:
            parts = [fake.name(), fake.address()]
            try:
                parts.append(fake.text(max_nb_chars=400))
            except Exception:  # noqa: BLE001 - some locales lack lorem
                pass
            text = "\n".join(parts)
            yield Document(text, "multilingual", script_of(text), f"faker:{locale}")


# (distribution, its package folder) of the web files: only what sits inside the package
WEB_SOURCES = (("jupyterlab", "jupyterlab"), ("plotly", "plotly"), ("jupyter-server", "jupyter_server"),
               ("nbconvert", "nbconvert"), ("ipywidgets", "ipywidgets"), ("voila", "voila"))


def web_text(rng: random.Random) -> Iterable[Document]:
    sources = [f"{dist}:{folder}/" for dist, folder in WEB_SOURCES]
    for path in _files(sources, ("*.json", "*.js", "*.css", "*.html", "*.mjs"), rng):
        if path.stat().st_size > 2_000_000:
            continue
        text = _read_text(path)
        if text and len(text) > 200 and script_of(text[:5000]) == "latin":
            sub = path.suffix.lstrip(".").replace("mjs", "js")
            for c in _chunks(text)[:20]:
                yield Document(c, "web", sub, _package_of(path))


def cpp_text(rng: random.Random) -> Iterable[Document]:
    for path in _files(("torch:torch/include/",), ("*.h", "*.hpp", "*.cuh"), rng):
        text = _read_text(path)
        if text and len(text) > 200:
            for c in _chunks(text)[:5]:
                yield Document(c, "cpp", "header", "torch")


def generated_text(rng: random.Random) -> Iterable[Document]:
    names = sorted(generated.GENERATORS)
    while True:
        name = rng.choice(names)
        yield Document(generated.GENERATORS[name](rng), "generated", name, "generated")


SOURCES = {"code": python_code, "english": english_prose, "legal": legal_text,
           "multilingual": multilingual, "web": web_text, "cpp": cpp_text, "generated": generated_text}


# ------------------------------------------------------------------ corpus
def _take(docs: Iterable[Document], budget: int, rng: random.Random) -> list[Document]:
    """A seeded sample of documents up to ``budget`` bytes, balanced over subdomains.

    Documents are pooled until the pool holds twice the budget (or the source runs dry),
    then drawn round-robin over subdomains so that no single source crowds out the rest.
    """
    pool: dict[str, list[Document]] = defaultdict(list)
    pooled = 0
    for d in docs:
        pool[d.subdomain].append(d)
        pooled += len(d.text.encode())
        if pooled >= 2 * budget:
            break
    for sub in sorted(pool):
        rng.shuffle(pool[sub])
    out, used = [], 0
    subs = sorted(pool)
    while used < budget and any(pool.values()):
        for sub in subs:
            if pool[sub] and used < budget:
                d = pool[sub].pop()
                out.append(d)
                used += len(d.text.encode())
    return out


def build_documents(total_bytes: int, seed: int = 0) -> list[Document]:
    """The mixed, labelled, shuffled document list (deterministic for a seed)."""
    if total_bytes <= 0:
        raise ValueError(f"corpus size must be positive, got {total_bytes} bytes")
    weights = {d: DOMAIN_SHARES[d] * BYTES_PER_TOKEN[d] for d in DOMAIN_SHARES}
    norm = sum(weights.values())
    docs: list[Document] = []
    for domain in sorted(SOURCES):
        rng = random.Random(f"{seed}:{domain}")
        budget = int(total_bytes * weights[domain] / norm)
        docs += _take(SOURCES[domain](rng), budget, rng)
    random.Random(seed).shuffle(docs)
    return relabel_by_script(docs)


def relabel_by_script(docs: list[Document]) -> list[Document]:
    """Label each multilingual document by the script of its own text.

    A catalog is labelled by its dominant script while it is read, but one chunk of it can be
    mostly Latin (untranslated strings, names); the per-token labels must say what the text is.
    """
    for d in docs:
        if d.domain == "multilingual":
            d.subdomain = script_of(d.text)
    return docs


def _jsonl_document(rec, path: Path, line: int, domain: str) -> Document:
    """One ``{"text": ..., "domain": ...}`` line as a Document; anything else is refused, file and line named
    (a null, a number or a list used to become the document "None", "12345" or "['a']")."""
    where = f"{path}:{line}"
    if not isinstance(rec, dict) or "text" not in rec:
        got = type(rec).__name__ if not isinstance(rec, dict) else "an object without \"text\""
        raise ValueError(f"{where} is not a JSON object with a \"text\" field (it is {got}): write each line as "
                         f"{{\"text\": \"...\"}}")
    fields = {"text": rec["text"], "domain": rec.get("domain", domain)}
    fields["subdomain"] = rec.get("subdomain", fields["domain"])
    for key, value in fields.items():
        if not isinstance(value, str):
            raise ValueError(f"{where}: \"{key}\" is {json.dumps(value)[:40]} ({type(value).__name__}), not text: "
                             f"write it as a JSON string, e.g. \"{key}\": \"...\"")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:   # a JSON escape such as \ud800 with no pair: not a character
            bad = e.start
            raise ValueError(f"{where}: \"{key}\" holds a lone surrogate \\u{ord(value[bad]):04x} at character {bad} "
                             f"(half of an escaped pair, not a character): fix or remove that escape in the file") from None
    return Document(fields["text"], fields["domain"], fields["subdomain"], path.name)


def load_text_files(paths: Iterable[str | Path], domain: str = "user") -> list[Document]:
    """A user's own .txt (one document per file) or .jsonl (``{"text": ...}`` per line) files."""
    docs = []
    for p in map(Path, paths):
        if not p.is_file():
            raise FileNotFoundError(f"corpus file {p} does not exist: check the path")
        raw = p.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"corpus file {p} is not UTF-8 (byte {e.start}): re-save it as UTF-8, "
                             f"e.g. iconv -t UTF-8 {p.name} > fixed.txt") from None
        if p.suffix == ".jsonl":
            for n, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    raise ValueError(f"{p}:{n} is not a JSON object with a \"text\" field") from None
                docs.append(_jsonl_document(rec, p, n, domain))
        else:
            docs += [Document(c, domain, domain, p.name) for c in _chunks(text)]
    if not any(d.text.strip() for d in docs):
        raise ValueError("the corpus is empty: the given files hold no text")
    return docs


def load_hf_dataset(name: str, split: str = "train", text_field: str = "text",
                    max_docs: int | None = None) -> list[Document]:
    """A Hugging Face dataset by name (needs the hub); offline it fails at once, clearly."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1" or not hub_reachable():
        raise ConnectionError(
            f"cannot load dataset {name!r}: the Hugging Face hub is not reachable from this machine. "
            f"Use local files instead: mono_utils.core.corpus.load_text_files(['my.txt' or 'my.jsonl'])")
    import datasets  # lazy: optional: only where a hub is reachable
    ds = datasets.load_dataset(name, split=split)
    docs = []
    for i, rec in enumerate(ds):
        if max_docs is not None and i >= max_docs:
            break
        docs.append(Document(rec[text_field], "hf", name, name))
    return docs


def hub_reachable(timeout: float = 2.0) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def manifest(docs: list[Document], token_counts: list[int] | None = None) -> dict:
    by_domain: dict[str, dict] = {}
    h = hashlib.sha256()
    for i, d in enumerate(docs):
        b = d.text.encode()
        h.update(d.domain.encode() + b"\0" + d.subdomain.encode() + b"\0" + b + b"\0")
        e = by_domain.setdefault(d.domain, {"bytes": 0, "documents": 0, "tokens": 0, "subdomains": {}})
        s = e["subdomains"].setdefault(d.subdomain, {"bytes": 0, "documents": 0, "tokens": 0, "sources": {}})
        t = token_counts[i] if token_counts else 0
        for entry in (e, s):
            entry["bytes"] += len(b)
            entry["documents"] += 1
            entry["tokens"] += t
        s["sources"][d.source] = s["sources"].get(d.source, 0) + len(b)
    total_tokens = sum(v["tokens"] for v in by_domain.values())
    for v in by_domain.values():
        v["token_share"] = v["tokens"] / total_tokens if total_tokens else None
    return {"documents": len(docs), "bytes": sum(v["bytes"] for v in by_domain.values()),
            "tokens": total_tokens, "domains": by_domain, "sha256": h.hexdigest(),
            "python": sys.version.split()[0], "unicode": unicodedata.unidata_version,
            "distributions": source_versions()}


def source_versions() -> dict[str, str | None]:
    """The installed version of every distribution the corpus reads (None: not installed)."""
    out = {}
    for name in CORPUS_DISTRIBUTIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def save_documents(docs: list[Document], path: Path) -> None:
    atomic_write_text(path, "".join(json.dumps(d.to_dict(), ensure_ascii=False) + "\n" for d in docs))


def read_documents(path: Path) -> list[Document]:
    with open(path, encoding="utf-8") as f:
        return [Document(**json.loads(line)) for line in f if line.strip()]
