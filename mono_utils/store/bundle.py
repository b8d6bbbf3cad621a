"""Share built artifacts as one file: ``export_bundle`` on the instructor's machine,
``import_bundle`` on each student's.

A bundle is a plain tar file (``.tar``, or gzip-compressed when the name ends in ``.gz``/``.tgz``)
whose first member is ``bundle.json``: the format version, and the size and sha256 of every
other member. The members are ``artifacts/<kind>/<folder>/<file>`` for every *complete* artifact
folder of the store (corpus, tokenizer, tokens + corpus manifest, models, SAEs, indexes, ...).
Only regular files inside the store travel: an artifact holding a symbolic link (or linked in
from elsewhere) is left out as damaged, and caches (the LLM replies of ``autointerp-cache/``,
``activations/``) and build logs never travel.

Import is defensive: nothing is unpickled (files are only copied; ``.npy`` headers are checked
for object arrays and only data formats are accepted); links, devices, absolute paths and
``..`` are refused; every file must be listed with the right size and sha256, and every listed
file must be present; each artifact folder must then pass its own ``MANIFEST.json`` check and
hold the ``config.json`` naming its kind and name, built from the config that hashes to its folder's
suffix (model B's files under model A's folder are refused). Members under a cache folder are refused,
and so is a bundle that would not fit on the disk or lists over ``MAX_EXPANSION`` times its size (a
gzip bomb). Before ``tarfile`` reads anything, every raw 512-byte header is scanned through a capped
stream: an extended header (PAX, GNU long name) over ``MAX_EXTENDED_HEADER`` bytes, a chain of them,
or more than ``MAX_EXPANSION`` times the file's size unpacked are refused (``tarfile`` reads an
extended header whole into memory: a 400 MB PAX header in a 0.4 MB bundle took 1.5 GB).
Everything is unpacked into hidden staging folders first and renamed into place only when the
whole bundle has verified, so a tampered, truncated or partial bundle changes nothing.
"""
from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import lzma
import json
import os
import re
import shutil
import tarfile
import time
import uuid
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from .. import __version__
from .artifacts import LOCAL_FOLDERS, ArtifactStore, atomic_output, file_lock, sha256_file, verify_folder

FORMAT = "mono-bundle"
VERSION = 1
INDEX = "bundle.json"
PREFIX = "artifacts"
ALLOWED_SUFFIXES = {".json", ".jsonl", ".npy", ".safetensors", ".txt", ".md", ".csv"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")
_ARTIFACT_FOLDER = re.compile(r"^.+-[0-9a-f]{12}$")   # <name>-<config hash>, as ArtifactStore.path names it
FREE_SPACE_MARGIN = 64 * 2**20   # an import leaves at least this much of the disk free
MAX_EXPANSION = 200              # real bundles unpack to a few times their size; a gzip bomb to 1000x
MAX_EXTENDED_HEADER = 1 << 20    # a PAX / GNU long-name header of a real bundle is a few hundred bytes
MAX_EXTENDED_CHAIN = 4           # ... and a member has at most a global and a local one
MAX_INDEX_BYTES = 64 * 2**20     # bundle.json of a store of 100 000 files is about 15 MB
_CHUNK = 1 << 20


class BundleError(ValueError):
    """A bundle is damaged, tampered with, partial, or not a bundle."""


# ---------------------------------------------------------------- export
def export_bundle(path: str | Path, store: ArtifactStore | None = None, *,
                  kinds: list[str] | None = None, verbose: bool = True) -> Path:
    """Write every complete artifact of ``store`` (optionally only ``kinds``) into one bundle file.

    Damaged or partial artifact folders are left out (and named). Returns the bundle's path;
    its sha256 is printed so it can be shared alongside and checked with ``import_bundle(sha256=)``.
    """
    store = store if store is not None else ArtifactStore()
    path = Path(path)
    if path.exists() and path.is_dir():
        raise ValueError(f"{path} is a folder: give a file name such as {path / 'artifacts.tar'}")
    entries = [e for e in store.entries() if (kinds is None or e["kind"] in kinds) and e["kind"] not in LOCAL_FOLDERS]
    root = Path(store.root).resolve()
    for e in entries:   # an artifact folder that is a link, or leads out of the store, is not exported
        folder = Path(e["path"])
        if e["ok"] and (folder.is_symlink() or root not in folder.resolve().parents):
            e["ok"], e["problems"] = False, [f"{folder} is a symbolic link or lies outside the store {root}"]
    skipped = [e for e in entries if not e["ok"]]
    good = [e for e in entries if e["ok"]]
    if not good:
        raise ValueError(f"nothing to export: no complete artifact in {store.root}"
                         + (f" of kinds {kinds}" if kinds else "")
                         + " (build first: python -m mono_utils build)")
    files: dict[str, dict] = {}
    sources: list[tuple[str, Path]] = []
    artifacts = []
    for e in good:
        folder = Path(e["path"])
        listed = []
        for p in sorted(folder.rglob("*")):
            if p.is_symlink() or p.name.startswith(".") or not p.is_file():
                continue    # verify_folder already counts a link as damage: only regular files travel
            rel = p.relative_to(folder).as_posix()
            if Path(rel).suffix not in ALLOWED_SUFFIXES:
                raise ValueError(f"{p}: files of type {Path(rel).suffix or '(none)'} are not exported "
                                 f"(only {sorted(ALLOWED_SUFFIXES)}); remove it or rebuild the artifact")
            arc = f"{PREFIX}/{e['kind']}/{folder.name}/{rel}"
            files[arc] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
            sources.append((arc, p))
            listed.append(rel)
        artifacts.append({"kind": e["kind"], "folder": folder.name, "files": listed})
    index = {"format": FORMAT, "version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "artifacts": artifacts, "files": files}
    try:
        index["mono_utils"] = __version__
    except ImportError:  # pragma: no cover
        pass
    with atomic_output(path) as tmp:
        with tarfile.open(tmp, "w:gz" if _gz(path) else "w", format=tarfile.PAX_FORMAT) as tar:
            raw = json.dumps(index, indent=1, sort_keys=True).encode()
            _add_bytes(tar, INDEX, raw)
            for arc, p in sources:
                info = tarfile.TarInfo(arc)
                info.size, info.mtime, info.mode = p.stat().st_size, int(p.stat().st_mtime), 0o644
                with open(p, "rb") as f:
                    tar.addfile(info, f)
    if verbose:
        size = path.stat().st_size / 2**20
        print(f"bundle {path}: {len(artifacts)} artifacts, {len(files)} files, {size:.1f} MB, "
              f"sha256 {sha256_file(path)}")
        for e in skipped:
            print(f"  left out (damaged): {e['kind']}/{e['name']}: {'; '.join(e['problems'][:2])}")
    return path


def _gz(path: Path) -> bool:
    return path.name.endswith((".gz", ".tgz"))


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------- import
def _safe_member_name(name: str) -> tuple[str, str, str]:
    """(kind, folder, rel) of ``artifacts/<kind>/<folder>/<rel>``; refuses anything else."""
    if "\\" in name or "\x00" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise BundleError(f"refusing member {name!r}: absolute or non-POSIX path (path traversal attempt?)")
    parts = PurePosixPath(name).parts
    if any(p in ("..", ".", "") for p in parts) or PurePosixPath(name).as_posix() != name:
        raise BundleError(f"refusing member {name!r}: '..' or '.' in the path (path traversal attempt?)")
    if len(parts) < 4 or parts[0] != PREFIX:
        raise BundleError(f"refusing member {name!r}: expected {PREFIX}/<kind>/<folder>/<file>")
    for p in parts[1:]:
        if not _NAME.match(p):
            raise BundleError(f"refusing member {name!r}: unexpected characters in {p!r}")
    if PurePosixPath(name).suffix not in ALLOWED_SUFFIXES:
        raise BundleError(f"refusing member {name!r}: only data files {sorted(ALLOWED_SUFFIXES)} are "
                          f"accepted (nothing executable or pickled)")
    return parts[1], parts[2], "/".join(parts[3:])


def _check_artifact_member(name: str) -> None:
    """A listed member belongs to an artifact folder of a kind that export writes (never a cache)."""
    kind, folder, _ = _safe_member_name(name)
    if kind in LOCAL_FOLDERS:
        raise BundleError(f"refusing member {name!r}: {kind} is not an artifact kind but a local cache or log folder "
                          f"(caches never travel in a bundle); get the bundle from python -m mono_utils export")
    if not _ARTIFACT_FOLDER.match(folder):
        raise BundleError(f"refusing member {name!r}: {kind}/{folder} is not an artifact kind/folder "
                          f"(<name>-<config hash>) that export writes; get a fresh bundle")


def _check_npy(path: Path) -> None:
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                _, _, dtype = np.lib.format.read_array_header_2_0(f)
        except Exception as e:  # noqa: BLE001
            raise BundleError(f"{path.name} is not a valid .npy file ({e})") from e
    if dtype.hasobject:
        raise BundleError(f"{path.name} holds Python objects (a pickle inside .npy): refused")


def _read_index(tar: tarfile.TarFile, first: tarfile.TarInfo | None) -> dict:
    if first is None or first.name != INDEX or not first.isfile():
        raise BundleError(f"not a mono_utils bundle: its first entry should be {INDEX} "
                          f"(made by python -m mono_utils export)")
    if first.size > MAX_INDEX_BYTES:
        raise BundleError(f"{INDEX} is implausibly large ({first.size} bytes): refused")
    try:
        index = json.loads(tar.extractfile(first).read(MAX_INDEX_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{INDEX} is not valid JSON ({e}): the bundle is damaged") from e
    except RecursionError:
        raise BundleError(f"{INDEX} is nested too deeply to be a bundle index: the bundle is damaged or "
                          f"hostile; get a fresh copy") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise BundleError(f"not a mono_utils bundle ({INDEX} has no format {FORMAT!r})")
    if index.get("version") != VERSION:
        raise BundleError(f"bundle format version {index.get('version')!r} is not supported (this "
                          f"mono_utils reads version {VERSION}); update mono_utils or re-export")
    files = index.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{INDEX} lists no files: the bundle is empty or damaged")
    for name, meta in files.items():
        _check_artifact_member(name)
        if not (isinstance(meta, dict) and isinstance(meta.get("size"), int) and meta["size"] >= 0
                and isinstance(meta.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", meta["sha256"])):
            raise BundleError(f"{INDEX}: entry for {name} lacks a valid size/sha256")
    return index


def _check_free_space(index: dict, root: Path, bundle_bytes: int) -> None:
    """Refuse before unpacking anything if the listed files would not fit, or look like a gzip bomb."""
    need = sum(meta["size"] for meta in index["files"].values())
    if need > MAX_EXPANSION * bundle_bytes + _CHUNK:
        raise BundleError(f"the bundle lists {need / 2**20:.0f} MB of files in a {bundle_bytes / 2**20:.1f} MB file "
                          f"(over {MAX_EXPANSION} times its size: a decompression bomb?): refused; get a fresh "
                          f"copy from whoever exported it")
    free = shutil.disk_usage(root).free
    if need + FREE_SPACE_MARGIN > free:
        raise BundleError(f"the bundle unpacks to {need / 2**20:.0f} MB but only {free / 2**20:.0f} MB are free in "
                          f"{root} (keeping {FREE_SPACE_MARGIN >> 20} MB spare): free some space or import into "
                          f"another store (--artifacts)")


def import_bundle(path: str | Path, store: ArtifactStore | None = None, *, sha256: str | None = None,
                  verbose: bool = True) -> list[Path]:
    """Verify a bundle made by :func:`export_bundle` and add its artifacts to ``store``.

    All or nothing: on any problem a :class:`BundleError` (a ``ValueError``) says what and how to
    fix it, and the store is unchanged. Artifacts already present and intact are kept as they are.
    ``sha256``, if given, must equal the bundle file's sha256 (as printed by the exporter).
    Returns the artifact folders the bundle provides.
    """
    store = store if store is not None else ArtifactStore()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no bundle at {path}: check the path (made by python -m mono_utils export)")
    if sha256 is not None and sha256_file(path) != sha256.lower():
        raise BundleError(f"{path} has sha256 {sha256_file(path)}, not the expected {sha256}: "
                          f"the file was modified or is incomplete; copy it again")
    root = Path(store.root)
    root.mkdir(parents=True, exist_ok=True)
    stage = _Stage(root)
    try:
        folders = _unpack_verified(path, stage)
        return _commit(stage, folders, store, verbose)
    finally:
        stage.cleanup()


class _Stage:
    """Hidden staging folders ``<root>/<kind>/.import-<token>/`` (same filesystem: renames are atomic;
    dot-folders are ignored by the store)."""

    def __init__(self, root: Path):
        self.root, self.token, self.made = root, f".import-{os.getpid()}-{uuid.uuid4().hex[:8]}", set()

    def __truediv__(self, kind: str) -> Path:
        d = self.root / kind / self.token
        if d not in self.made:
            d.mkdir(parents=True, exist_ok=True)
            self.made.add(d)
        return d

    def cleanup(self) -> None:
        for d in self.made:
            shutil.rmtree(d, ignore_errors=True)
            with contextlib.suppress(OSError):
                d.parent.rmdir()  # only if the kind folder is empty (nothing imported there)


_OPENERS = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}


def _scan_raw_headers(path: Path) -> None:
    """Read the bundle's raw 512-byte tar headers (decompressed, never more than a block at a time) and
    refuse what tarfile would read whole into memory: an oversized or chained extended header, or more
    unpacked bytes than ``MAX_EXPANSION`` times the file. Anything else odd (not a tar, truncated) is
    left for tarfile to report."""
    with open(path, "rb") as f:
        magic = f.read(6)
    opener = next((o for m, o in _OPENERS.items() if magic.startswith(m)), open)
    budget = MAX_EXPANSION * path.stat().st_size + _CHUNK
    try:
        with opener(path, "rb") as f:
            chain, total = 0, 0
            while True:
                block = f.read(512)
                total += len(block)
                if len(block) < 512 or block == bytes(512):
                    return
                try:
                    size = tarfile.nti(block[124:136])
                except (tarfile.HeaderError, ValueError):
                    return                      # not a tar header: tarfile says what is wrong
                if size < 0:
                    return
                if block[156:157] in (b"x", b"g", b"L", b"K"):     # PAX / GNU long-name extended headers
                    chain += 1
                    if size > MAX_EXTENDED_HEADER or chain > MAX_EXTENDED_CHAIN:
                        raise BundleError(
                            f"{path} holds an extended tar header of {size} bytes"
                            + (f" (the {chain}th in a row)" if chain > MAX_EXTENDED_CHAIN else "")
                            + f" (a bundle's are under {MAX_EXTENDED_HEADER} bytes, one or two per file): refused "
                              f"before reading it (it would be held whole in memory); get a fresh copy from "
                              f"whoever exported it (python -m mono_utils export)")
                else:
                    chain = 0
                skip = -(-size // 512) * 512
                total += skip
                if total > budget:
                    raise BundleError(f"{path} unpacks to more than {budget / 2**20:.0f} MB (over {MAX_EXPANSION} "
                                      f"times its size: a decompression bomb?): refused; get a fresh copy from "
                                      f"whoever exported it")
                while skip:                     # read (and drop) the member's data a chunk at a time
                    got = len(f.read(min(skip, _CHUNK)))
                    if not got:
                        return
                    skip -= got
    except BundleError:
        raise
    except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError):
        return                                  # truncated or not compressed as it claims: tarfile reports it


def _unpack_verified(path: Path, stage: "_Stage") -> set[tuple[str, str]]:
    seen: set[str] = set()
    folders: set[tuple[str, str]] = set()
    _scan_raw_headers(path)
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BundleError(f"{path} is not a readable bundle ({e}): it is damaged, truncated, or not "
                          f"made by python -m mono_utils export") from e
    try:
        with tar:
            index = _read_index(tar, tar.next())
            _check_free_space(index, stage.root, path.stat().st_size)
            files = index["files"]
            while True:
                member = tar.next()
                if member is None:
                    break
                name = member.name
                if not member.isfile():
                    raise BundleError(f"refusing member {name!r}: links, folders and devices are not "
                                      f"allowed in a bundle (path traversal attempt?)")
                kind, folder, rel = _safe_member_name(name)
                if name not in files:
                    raise BundleError(f"{name} is in the bundle but not listed in {INDEX}: the bundle "
                                      f"was tampered with; get a fresh copy from whoever exported it")
                if name in seen:
                    raise BundleError(f"{name} appears twice in the bundle: tampered; get a fresh copy")
                meta = files[name]
                if member.size != meta["size"]:
                    raise BundleError(f"{name} has {member.size} bytes, {INDEX} says {meta['size']}: "
                                      f"tampered or damaged; get a fresh copy")
                dst = stage / kind / folder / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                h, n = hashlib.sha256(), 0
                src = tar.extractfile(member)
                with open(dst, "wb") as out:
                    while block := src.read(_CHUNK):
                        n += len(block)
                        if n > meta["size"]:
                            break
                        h.update(block)
                        out.write(block)
                if n != meta["size"]:
                    raise BundleError(f"{name} is truncated ({n} of {meta['size']} bytes): the bundle is "
                                      f"partial; copy it again")
                if h.hexdigest() != meta["sha256"]:
                    raise BundleError(f"{name} does not match its sha256 in {INDEX}: the bundle was "
                                      f"modified or corrupted; get a fresh copy from whoever exported it")
                if dst.suffix == ".npy":
                    _check_npy(dst)
                seen.add(name)
                folders.add((kind, folder))
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise BundleError(f"{path} is truncated or damaged ({e}): the bundle is partial; copy it again") from e
    missing = sorted(set(files) - seen)
    if missing:
        raise BundleError(f"the bundle is partial: {len(missing)} listed file(s) are missing "
                          f"(e.g. {missing[0]}); copy it again or re-export it")
    for kind, folder in sorted(folders):
        problems = verify_folder(stage / kind / folder, kind=kind)
        if not problems:
            problems = _config_problems(stage / kind / folder, kind)
        if problems:
            raise BundleError(f"artifact {kind}/{folder} in the bundle is not complete: "
                              f"{'; '.join(problems[:3])}; re-export it from an intact store")
    return folders


def _config_problems(folder: Path, kind: str) -> list[str]:
    """An artifact folder holds the config.json that ArtifactStore.get_or_build writes (its kind included)."""
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return ["its config.json is missing or unreadable"]
    if not isinstance(cfg, dict) or cfg.get("kind") != kind:
        return [f"its config.json does not name the kind {kind!r}"]
    return []


def _commit(stage: "_Stage", folders: set[tuple[str, str]], store: ArtifactStore, verbose: bool) -> list[Path]:
    """Rename every staged folder into place (each under the store's build lock); roll back on error."""
    root = Path(store.root)
    done: list[tuple[Path, Path | None]] = []  # (final, aside)
    out = []
    try:
        for kind, folder in sorted(folders):
            final = root / kind / folder
            out.append(final)
            with file_lock(final.parent / f".lock-{folder}"):
                if final.exists() and not verify_folder(final):
                    if verbose:
                        print(f"  kept (already present): {kind}/{folder}")
                    continue
                aside = None
                if final.exists():
                    aside = final.parent / f".old-{folder}-{os.getpid()}"
                    os.replace(final, aside)
                os.replace(stage / kind / folder, final)
                done.append((final, aside))
                if verbose:
                    print(f"  imported: {kind}/{folder}")
    except BaseException:
        for final, aside in reversed(done):
            shutil.rmtree(final, ignore_errors=True)
            if aside is not None:
                os.replace(aside, final)
        raise
    for _, aside in done:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    return out
