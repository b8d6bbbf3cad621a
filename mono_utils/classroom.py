"""A class on one server: the shared read-only store, the exercises template, each student's own copy.

The JupyterHub configuration in ``classroom/jupyterhub_config.py`` uses these; the teacher runs, as root::

    python -m mono_utils.classroom prepare --bundle class.tar --root /srv/monolab

which imports the teacher's bundle ONCE into ``<root>/store`` and writes the student notebooks into
``<root>/exercises``, both owned by root, folders 0755 and files 0644: every student reads them, no
student writes them. ``<root>/hub`` (the hub's database and cookie secret) is root's alone (0700).

Before a student's server starts, the hub calls :func:`prepare_student_home`: the home folder becomes
0700 (Debian's ``useradd`` leaves it 0755, readable by every other student) and the exercises the
student does not have yet are copied in by a child process running AS THE STUDENT, so a link a student
planted in their home can never make root write elsewhere. A student's edited notebook is never replaced.
"""
from __future__ import annotations

import argparse
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from .store.artifacts import ArtifactStore
from .store.bundle import import_bundle

STORE, EXERCISES, HUB = "store", "exercises", "hub"


def lock_read_only(folder: str | Path) -> int:
    """Make ``folder`` readable by everyone and writable by its owner only (folders 0755, files 0644);
    owned by root when run as root. Refuses a symbolic link inside (the store never holds one).
    Returns how many entries were set."""
    folder = Path(folder)
    n = 0
    for path in [folder, *sorted(folder.rglob("*"))]:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            raise ValueError(f"{path} is a symbolic link: a shared class folder holds plain files only. "
                             f"Remove it (or import the bundle again into an empty --root)")
        if os.geteuid() == 0:
            os.chown(path, 0, 0, follow_symlinks=False)
        os.chmod(path, 0o755 if stat.S_ISDIR(st.st_mode) else 0o644)
        n += 1
    return n


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def prepare_class(root: str | Path, bundle: str | Path, notebooks: str | Path | None = None) -> dict:
    """Import ``bundle`` into ``<root>/store``, write the exercises template into ``<root>/exercises``,
    lock both read-only for students and keep ``<root>/hub`` private. Safe to run again (a new bundle
    adds its artifacts; the template is rewritten from the notebooks)."""
    # lazy: the lessons package imports torch and every lesson (seconds); the hub's per-student hook
    # imports this module and needs none of that
    from .lessons.student import write_student_versions
    root = Path(root).resolve()
    if not Path(bundle).is_file():
        raise FileNotFoundError(f"no bundle at {bundle}: export one on the teacher's machine with "
                                f"`python -m mono_utils export class.tar` and give its path to --bundle")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    store, template, hub = root / STORE, root / EXERCISES, root / HUB
    import_bundle(bundle, ArtifactStore(store))
    if template.exists():   # the template is the teacher's own copy, rewritten whole from the notebooks
        shutil.rmtree(template)
    written = write_student_versions(template, notebooks)
    lock_read_only(store)
    lock_read_only(template)
    hub.mkdir(exist_ok=True)
    os.chmod(hub, 0o700)
    return {"root": root, "store": store, "store_bytes": _size(store), "exercises": template,
            "notebooks": len(written), "hub": hub}


def copy_exercises(template: str | Path, dest: str | Path) -> list[Path]:
    """Copy every notebook of ``template`` that ``dest`` lacks; never replaces a file. Run as the student
    (:func:`prepare_student_home` does): files 0644 in the student's own 0700 home."""
    template, dest = Path(template), Path(dest)
    if dest.is_symlink():
        raise ValueError(f"{dest} is a symbolic link: exercises are copied into a real folder only. "
                         f"Remove the link and start the server again")
    dest.mkdir(mode=0o755, exist_ok=True)
    copied = []
    for src in sorted(template.glob("*.ipynb")):
        target = dest / src.name
        try:   # O_EXCL: an existing file (a student's edits) or a planted link is left alone
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
        copied.append(target)
    return copied


def prepare_student_home(username: str, root: str | Path) -> list[str]:
    """The hub's pre-spawn step for one student: home 0700, missing exercises copied as the student."""
    user = pwd.getpwnam(username)
    if user.pw_uid == 0:
        raise ValueError("root is not a student: log in to the hub as a student account "
                         "(create it with useradd -m -G students NAME)")
    home = Path(user.pw_dir)
    st = os.lstat(home)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != user.pw_uid:
        raise ValueError(f"{home} is not a folder owned by {username}: create the account with a home "
                         f"(useradd -m -G students {username})")
    os.chmod(home, 0o700)   # Debian's useradd leaves 0755: every student could read every other's notebooks
    template = Path(root) / EXERCISES
    done = subprocess.run(
        [sys.executable, "-m", "mono_utils.classroom", "copy", str(template), str(home / EXERCISES)],
        user=user.pw_uid, group=user.pw_gid, extra_groups=[], cwd=home, capture_output=True, text=True,
        env={"HOME": str(home), "PATH": os.defpath, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    if done.returncode:
        raise RuntimeError(f"copying the exercises for {username} failed: {done.stderr.strip()[-800:]}")
    return done.stdout.split()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mono_utils.classroom",
                                 description="Set up a class server's shared files (see docs/class-server.md).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="import the teacher's bundle once and write the exercises (as root)")
    p.add_argument("--bundle", required=True, help="a bundle written by `python -m mono_utils export`")
    p.add_argument("--root", default="/srv/monolab", help="the class folder (default /srv/monolab)")
    p.add_argument("--notebooks", default=None, help="folder of the source notebooks (default notebooks/)")
    c = sub.add_parser("copy", help=argparse.SUPPRESS)   # the per-student copy, run as the student
    c.add_argument("template")
    c.add_argument("dest")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "copy":
            print("\n".join(str(p) for p in copy_exercises(args.template, args.dest)))
            return 0
        rep = prepare_class(args.root, args.bundle, args.notebooks)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"store {rep['store']} ({rep['store_bytes'] / 1e6:.1f} MB), read-only for students\n"
          f"exercises template {rep['exercises']} ({rep['notebooks']} notebooks)\n"
          f"hub state {rep['hub']} (root only)\n"
          f"start the hub: MONO_CLASS_ROOT={rep['root']} jupyterhub -f classroom/jupyterhub_config.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
