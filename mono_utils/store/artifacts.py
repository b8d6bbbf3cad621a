"""The artifact store: every built thing lives in ``<root>/<kind>/<name>-<confighash>/``.

A folder holds ``config.json``, ``metrics.json`` and its weights (safetensors / npy / json).
It is built in a temporary sibling folder and renamed into place only when complete, with a
``MANIFEST.json`` of every file's size and sha256; loading checks the manifest, so a partial
or tampered artifact is never silently used. A lock file serialises two processes that build
the same artifact (the second one waits, then reuses the first one's result).

The folder's name is content-addressed: ``<name>-<confighash>``. Its ``config.json`` must name the
folder's kind and name, and the config it was built from (recorded in ``MANIFEST.json`` as
``artifact``) must hash to the folder's suffix; a folder holding another artifact's files (model
B's under model A's name) is damage, found on load and on import (:func:`identity_problems`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator


ARTIFACTS_ENV = "MONO_ARTIFACTS"
MANIFEST = "MANIFEST.json"
UNHASHED = {MANIFEST, "metrics.json"}  # metrics may be extended after the build
# Folders of the store that hold caches, not artifacts: never listed, exported or imported.
CACHE_KINDS = ("autointerp-cache", "activations")
LOCAL_FOLDERS = CACHE_KINDS + ("build-logs",)   # ... and the logs of build --jobs N


# Keys a build adds to (or rewrites in) config.json after get_or_build wrote it: SparseAutoencoder.save
# and the transcoder's save merge their own description in (the "sae" key gains the learned input_scale).
BUILD_REWRITTEN_KEYS = ("format", "sae", "transcoder", "weights_sha256")
_ARTIFACT_FOLDER = re.compile(r"^(.+)-([0-9a-f]{12})$")   # <name>-<config hash>, as ArtifactStore.path names it


class ArtifactError(RuntimeError):
    """An artifact is missing, partial or corrupted."""


def removed_message(path: str | Path) -> str:
    """What to say when a folder of the store vanished during a run (deleted or moved by hand, or by another
    process): libraries then fail with messages about something else (transformers: "Repo id must be...")."""
    return (f"{path} was removed while this run was using it: the artifact store (or this artifact's folder) was "
            f"deleted or moved during the run. Nothing in it can be read: rebuild it with python -m mono_utils build "
            f"--preset <preset> (or import a bundle), then run this again; if the store lives elsewhere now, set "
            f"{ARTIFACTS_ENV} (or --artifacts) to its folder")


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]   # mono_utils/store/artifacts.py


def default_root() -> Path:
    env = os.environ.get(ARTIFACTS_ENV)
    if env and Path(env).exists() and not Path(env).is_dir():
        raise ValueError(f"{ARTIFACTS_ENV}={env} is a file, not a folder: point {ARTIFACTS_ENV} at the artifact "
                         f"store's folder (or unset it to use data/artifacts)")
    return Path(env) if env else repo_root() / "data" / "artifacts"


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:12]


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync it and rename it over ``path``.

    If the body raises (a full disk included), the temp file is removed and the old file at
    ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; a file written for others (a student notebook, a bundle, a page)
        # gets the mode open() would give it: 0666 less the umask
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_UMASK_LOCK = __import__("threading").Lock()


def current_umask() -> int:
    """The process's umask (read from /proc where it can be, else by setting and restoring it under a lock)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:     # os.umask can only be read by setting it: restore it at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename)."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | Path):
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); delete it or rebuild the artifact") from e
    except RecursionError:   # e.g. 100 000 nested lists: json gives up with a bare RecursionError
        raise ArtifactError(f"{path} is nested too deeply to be a config or metrics file (damaged or hostile): "
                            f"delete it and rebuild the artifact, or get a fresh copy") from None


def save_safetensors_atomic(tensors: dict, path: str | Path, metadata: dict | None = None) -> Path:
    from safetensors.torch import save   # lazy: it imports torch (0.7 s), which the store needs only here
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write_bytes(path, save(tensors, metadata=metadata))


# ---------------------------------------------------------------- locking
@contextlib.contextmanager
def file_lock(path: Path, timeout: float = 3600.0) -> Iterator[None]:
    """An inter-process exclusive lock (fcntl on POSIX, msvcrt on Windows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+b")
    try:
        start = time.monotonic()
        while True:
            try:
                if os.name == "nt":  # pragma: no cover
                    import msvcrt  # lazy: Windows only
                    msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
                else:
                    import fcntl  # lazy: POSIX only
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"waited {timeout:.0f}s for lock {path}; is another build stuck?")
                time.sleep(0.2)
        yield
    finally:
        if os.name != "nt":
            import fcntl  # lazy: POSIX only
            with contextlib.suppress(OSError):
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


# ---------------------------------------------------------------- the store
def write_manifest(folder: Path, artifact: dict | None = None) -> dict:
    """Record every file's size and sha256 (and, for a store artifact, the kind, name and config it was
    built from: ``artifact``) in ``MANIFEST.json``."""
    files = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel not in UNHASHED and not p.name.startswith(".lock"):
            st = p.stat()
            files[rel] = {"size": st.st_size, "sha256": sha256_file(p), "mtime_ns": st.st_mtime_ns}
    manifest = {"files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if artifact is not None:
        manifest["artifact"] = artifact
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


QUICK_VERIFY_BYTES = 64 << 20


def verify_folder(folder: Path, deep: bool = False, kind: str | None = None) -> list[str]:
    """Problems with an artifact folder (empty list: it is complete and intact).

    Every file's size is checked and its sha256 recomputed, except that files over 64 MB
    whose modification time is unchanged since the build skip the hash (a 1 GB index would
    otherwise cost seconds on every load); ``deep=True`` hashes everything. A MANIFEST that is
    malformed, lists nothing, or leaves out a file of the folder, and a symbolic link anywhere in
    the folder, are damage too (the build rebuilds such a folder; export leaves it out). So is a
    store artifact folder (``<name>-<12 hex>``) whose config does not match its name
    (:func:`identity_problems`; ``kind`` is the folder's kind, by default its parent folder's name).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} does not exist"]
    mpath = folder / MANIFEST
    if not mpath.exists():
        return [f"{folder} has no {MANIFEST}: it is partial (a build was interrupted)"]
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except Exception as e:  # noqa: BLE001 - any damage means "corrupt"
        return [f"{mpath} is unreadable ({e})"]
    files = manifest.get("files") if isinstance(manifest, dict) else None
    malformed = _manifest_problem(files)
    if malformed:
        return [f"{mpath} is malformed ({malformed}): the artifact is damaged"]
    problems = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            problems.append(f"{rel} is a symbolic link (an artifact holds only regular files)")
        elif p.is_file() and rel not in files and rel not in UNHASHED and not p.name.startswith("."):
            problems.append(f"{rel} is not listed in {MANIFEST} (added after the build?)")
    for rel, meta in files.items():
        p = folder / rel
        if p.is_symlink():
            continue                        # reported above
        if not p.is_file():
            problems.append(f"{rel} is missing")
        elif p.stat().st_size != meta["size"]:
            problems.append(f"{rel} has {p.stat().st_size} bytes, expected {meta['size']} (truncated?)")
        elif (not deep and meta["size"] > QUICK_VERIFY_BYTES
              and p.stat().st_mtime_ns == meta.get("mtime_ns")):
            continue
        elif sha256_file(p) != meta["sha256"]:
            problems.append(f"{rel} does not match its recorded sha256 (modified or corrupted)")
    if not problems:
        problems = identity_problems(folder, manifest, kind)
    return problems


def _artifact_record(kind: str, name: str, config: dict) -> dict:
    """What MANIFEST.json records of the artifact a folder holds: its kind, name and config (the config
    as config.json holds it, left out if that JSON form no longer hashes to the folder's suffix)."""
    as_json = json.loads(json.dumps(config, default=_json_default))
    return {"kind": kind, "name": name, **({"config": as_json} if config_hash(as_json) == config_hash(config) else {})}


def identity_problems(folder: Path, manifest: dict | None = None, kind: str | None = None) -> list[str]:
    """Why a store artifact folder ``<kind>/<name>-<hash>`` does not hold that artifact (empty: it does).

    Its ``config.json`` must name the kind and the name; the config it was built from must hash to
    the folder's suffix (the one recorded in ``MANIFEST.json``, or, for artifacts built before it was
    recorded, ``config.json`` itself when no build rewrote it). A folder not named like a store
    artifact (an SAE saved elsewhere) has no identity to check.
    """
    folder = Path(folder)
    m = _ARTIFACT_FOLDER.match(folder.name)
    if not m:
        return []
    name, suffix = m.groups()
    kind = kind if kind is not None else folder.parent.name
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return [f"its config.json is missing or unreadable (a store artifact {kind}/{folder.name} always has one)"]
    fix = "the folder holds another artifact's files (renamed or mixed up): delete it and rebuild or re-import it"
    if not isinstance(cfg, dict) or cfg.get("kind") != kind or cfg.get("name") != name:
        got = f"{cfg.get('kind')}/{cfg.get('name')}" if isinstance(cfg, dict) else type(cfg).__name__
        return [f"its config.json describes {got}, not {kind}/{name}: {fix}"]
    built = (manifest or {}).get("artifact") if isinstance(manifest, dict) else None
    if isinstance(built, dict):
        config = built.get("config")
        if (built.get("kind"), built.get("name")) != (kind, name):
            return [f"its {MANIFEST} records the artifact {built.get('kind')}/{built.get('name')}: {fix}"]
        if not isinstance(config, dict):
            return []   # a config that JSON does not hold exactly (recorded without it): name and kind match
        if config_hash(config) != suffix:
            return [f"the config it was built from hashes to {config_hash(config)}, not to its folder's "
                    f"suffix {suffix}: {fix}"]
        changed = sorted(k for k in set(config) | set(cfg) - {"kind", "name"}
                         if k not in BUILD_REWRITTEN_KEYS and cfg.get(k) != config.get(k))
        if changed:
            return [f"its config.json differs from the config it was built from in {changed[:3]}: {fix}"]
        return []
    rest = {k: v for k, v in cfg.items() if k not in ("kind", "name")}
    rewritten = [k for k in BUILD_REWRITTEN_KEYS if k in rest]
    if rewritten:
        return []   # built before the config was recorded, and the build rewrote part of it: name and kind match
    if config_hash(rest) != suffix:
        return [f"its config.json hashes to {config_hash(rest)}, not to its folder's suffix {suffix}: {fix}"]
    return []


def _manifest_problem(files) -> str | None:
    """Why a MANIFEST's ``files`` is not a non-empty {relative path: {size, sha256}} map (None: it is)."""
    if not isinstance(files, dict):
        return f"'files' is {type(files).__name__}, not a mapping of file names"
    if not files:
        return "it lists no files"
    for rel, meta in files.items():
        if not isinstance(rel, str) or not rel or rel.startswith("/") or ".." in rel.split("/") or "\\" in rel:
            return f"entry {rel!r} is not a relative file name"
        if not isinstance(meta, dict):
            return f"entry {rel!r} is not a mapping"
        size, digest = meta.get("size"), meta.get("sha256")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            return f"entry {rel!r} has no valid size"
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            return f"entry {rel!r} has no valid sha256"
    return None


class ArtifactStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"the artifact store {self.root} is a file, not a folder: give a folder "
                             f"(--artifacts or ${ARTIFACTS_ENV})")

    def path(self, kind: str, name: str, config: dict) -> Path:
        return self.root / kind / f"{name}-{config_hash(config)}"

    def is_built(self, kind: str, name: str, config: dict) -> bool:
        return not verify_folder(self.path(kind, name, config))

    def _require_writable(self, kind: str, final: Path) -> None:
        """A store that may not be written (a class's shared, read-only store) cannot build what it lacks:
        say which artifact is missing and what to do, instead of a bare PermissionError on its folder."""
        probe = final.parent
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not os.access(probe, os.W_OK | os.X_OK):
            raise PermissionError(
                f"{kind}/{final.name} is not built in {self.root}, and this store is read-only for you (a class's "
                f"shared store?), so it cannot be built here. Ask your teacher for a bundle that holds it "
                f"(python -m mono_utils export, on a machine that built it), or set MONO_ARTIFACTS to a folder of "
                f"your own to build it there")

    def get_or_build(self, kind: str, name: str, config: dict,
                     build: Callable[[Path], dict | None], *, force: bool = False,
                     verbose: bool = True) -> Path:
        """Return the folder of a complete artifact, building it with ``build(tmpdir)`` if needed.

        ``build`` writes its files into ``tmpdir`` and may return a metrics dict. A corrupted
        or partial artifact is reported and rebuilt; the old folder is kept aside until the new
        one is in place, so a failed rebuild loses nothing that was intact.
        """
        final = self.path(kind, name, config)
        if not force and not verify_folder(final):
            return final        # complete: no lock needed (a read-only store can be read)
        self._require_writable(kind, final)
        lock = final.parent / f".lock-{final.name}"
        with file_lock(lock):
            if not force:
                problems = verify_folder(final)
                if not problems:
                    return final
                if final.exists() and verbose:
                    print(f"[mono_utils] {kind}/{final.name} is damaged, rebuilding: {'; '.join(problems[:3])}")
            # a build killed mid-way (SIGKILL, a lost machine) leaves its .tmp folder behind: under
            # the lock no other process is building this artifact, so every such folder is stale
            for stale in final.parent.glob(f".tmp-{final.name}-*"):
                if stale.name.rsplit("-", 1)[-1].isdigit():   # .tmp-<name>-<pid>
                    shutil.rmtree(stale, ignore_errors=True)
            tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
            tmp.mkdir(parents=True)
            try:
                atomic_write_json(tmp / "config.json", {"kind": kind, "name": name, **config}) \
                    if not (tmp / "config.json").exists() else None
                metrics = build(tmp)
                if not tmp.is_dir():            # deleted under the build (the store removed mid-run)
                    raise FileNotFoundError(f"{tmp} vanished during the build")
                if not (tmp / "config.json").exists():
                    atomic_write_json(tmp / "config.json", {"kind": kind, "name": name, **config})
                if metrics is not None:
                    atomic_write_json(tmp / "metrics.json", metrics)
                elif not (tmp / "metrics.json").exists():
                    atomic_write_json(tmp / "metrics.json", {})
                write_manifest(tmp, _artifact_record(kind, name, config))
                aside = None
                if final.exists():
                    aside = final.parent / f".old-{final.name}-{os.getpid()}"
                    os.replace(final, aside)
                os.replace(tmp, final)
                if aside is not None:
                    shutil.rmtree(aside, ignore_errors=True)
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                if not tmp.parent.exists():     # the store was deleted mid-build: say so, not "No such file"
                    raise ArtifactError(removed_message(self.root) + f" ({kind}/{final.name} was being built)") from e
                raise
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return final

    def load_checked(self, folder: str | Path) -> Path:
        folder = Path(folder)
        problems = verify_folder(folder)
        if problems:
            raise ArtifactError(f"artifact {folder} is not usable: {'; '.join(problems)}. "
                                f"Delete the folder and rebuild it (e.g. python -m mono_utils build).")
        return folder

    def update_metrics(self, folder: str | Path, **metrics) -> dict:
        """Merge new entries into an artifact's metrics.json (atomically). Entries it already holds are not
        written again: a reader of a shared, read-only store (a class server's students) writes nothing."""
        path = Path(folder) / "metrics.json"
        current = read_json(path) if path.exists() else {}
        if path.exists() and all(k in current and current[k] == json.loads(json.dumps(v)) for k, v in metrics.items()):
            return current
        current.update(metrics)
        atomic_write_json(path, current)
        return current

    def entries(self) -> list[dict]:
        out = []
        if not self.root.exists():
            return out
        for kind_dir in sorted(p for p in self.root.iterdir()
                               if p.is_dir() and p.name not in LOCAL_FOLDERS and not p.name.startswith(".")):
            for folder in sorted(p for p in kind_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                problems = verify_folder(folder)
                size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
                metrics = {}
                with contextlib.suppress(Exception):
                    metrics = read_json(folder / "metrics.json")
                out.append({"kind": kind_dir.name, "name": folder.name, "path": str(folder),
                            "ok": not problems, "problems": problems, "bytes": size,
                            "metrics": metrics})
        return out
