"""Every test file in the repository is collected by the README's test command.

pytest skips some folder names when it recurses (``norecursedirs``: ``build``, ``dist``, ``*.egg``,
dot-folders...), and ruff and other tools skip ``build/`` too. A test folder under such a name is
silently never run: ``tests/build/`` went uncollected that way until the package became
``mono_utils/pipeline`` and its tests ``tests/pipeline``. This test runs the collection the way
``make test`` does and names any ``test_*.py`` it does not reach.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_test_pytest_args() -> list[str]:
    """The pytest arguments of the Makefile's ``test`` recipe: what the README's ``make test`` runs."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    m = re.search(r"^test:[^\n]*\n((?:\t[^\n]*\n)+)", makefile, flags=re.M)
    assert m, "the Makefile has no `test:` recipe; the README's test command is `make test`"
    for line in m.group(1).splitlines():
        words = shlex.split(line.strip())
        if "pytest" in words:
            return words[words.index("pytest") + 1:]
    raise AssertionError("the Makefile's `test:` recipe runs no pytest")


def collected_files(args: list[str]) -> set[str]:
    # --collect-only with the recipe's own arguments (minus what only shapes the report)
    keep = [a for a in args if not a.startswith("--durations")]
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *keep, "-p", "no:cacheprovider"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"collection failed:\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}"
    files = set()
    for line in out.stdout.splitlines():
        # `-q` lists node ids (file::test); `-qq` (the recipe's -q plus ours) lists `file: count`
        m = re.match(r"^(tests/\S+?\.py)(?:::|: \d+$)", line.strip())
        if m:
            files.add(m.group(1))
    return files


def test_every_test_file_is_collected_by_make_test():
    args = make_test_pytest_args()
    on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py")
               if ".venv" not in p.parts and "__pycache__" not in p.parts}
    assert on_disk, "no tests/**/test_*.py found"
    missing = sorted(on_disk - collected_files(args))
    assert not missing, (f"{len(missing)} test file(s) are never collected by `make test` (pytest {' '.join(args)}): "
                         f"{missing}. A folder named like build output (build, dist, *.egg, .*) is skipped by "
                         f"pytest's norecursedirs: rename the folder, or set norecursedirs in pyproject.toml")


def test_no_package_or_test_folder_is_named_like_build_output():
    # the names pytest's default norecursedirs and ruff's default exclude skip
    skipped = {"build", "dist", "_build", "node_modules", "venv", "site-packages", "__pypackages__", "CVS", "{arch}"}
    # our own folders only: installed JavaScript (node_modules/, git-ignored) has dist/ folders of its own
    bad = [p.relative_to(ROOT).as_posix() for base in ("mono_utils", "tests")
           for p in (ROOT / base).rglob("*") if p.is_dir() and "node_modules" not in p.parts
           and (p.name in skipped or p.name.endswith(".egg"))]
    assert not bad, f"folders that pytest or ruff skip by default: {bad}; rename them"
