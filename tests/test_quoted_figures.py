"""Every measured figure that the README, the teacher's guide and the notebooks' prose quote is in the
generated ``docs/results.md``.

A "figure" here is a number a reader takes as measured: one with a decimal point (``17.7``,
``0.57``), a percentage (``38%``) or a number with a unit of time, size or memory (``41 minutes``,
``2.6 GB``). Code (fenced or inline), math (``$...$``), links and HTML comments are not prose. Each
figure must appear, as the same token, in ``docs/results.md`` (written by ``make results`` from the
build), or be one of the paper's figures (the table in ``PAPER`` with where it comes from), or a
constant of the method named in ``CONSTANTS`` with why it is not a measurement. A rebuild that
moves a number therefore fails here until the prose quotes the new one.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results.md"

# The paper's figures (Bricken et al. 2023; shared/reference/paper.md), quoted beside ours for comparison
PAPER = {
    "79%": "A/1 loss recovered (zero ablation)", "94.5%": "A/5 loss recovered", "7%": "A/1 ultralow share",
    "0.8": "DNA proxy Pearson", "0.38": "base64 proxy Pearson", "0.72": "universality, features",
    "0.46": "universality, neurons", "0.92": "named-feature correlations", "0.85": "named-feature correlations",
    "0.91": "named-feature correlations", "0.74": "logit test, features", "0.53": "logit test, neurons",
    "0.50": "logit test, randomized (chance)", "0.5": "chance of a balanced accuracy",
    "40M": "the paper's number of contexts sampled (250 tokens each)",
}
# Constants of the method, of the lessons' synthetic data or of a preset: set, not measured
CONSTANTS = {
    "0.4": "the cosine threshold of feature-splitting links (the exercise 05.1 sets it)",
    "0.2": "the resampled encoder row's scale (the paper's resampling, 0.2 x the live rows' mean norm)",
    "0.9": "a bar stated by an exercise or a check (cosine above 0.9, correlation >= 0.9)",
    "0.95": "a bar stated by an exercise or a check",
    "8.32": "the loss of the uniform distribution over 4,096 tokens (ln 4096)",
    "8.3": "the same, ln 4096, to one decimal",
    "80%": "the last resampling of the default schedule, at 80% of the run (a recipe constant)",
    "2410.13928": "an arXiv identifier, not a figure",
    "15%": "the share of token rows held out for validation (a preset constant)",
    "20%": "the last share of training whose learning rate decays (a recipe constant)",
    "25%": "the dead window of a recipe ablation (a constant)",
    "100%": "a share stated as a bound",
    "0%": "a share stated as a bound",
    "50%": "a share stated as a bound",
    "1.3M": "model A's parameter count (its shape, not a measurement)",
}

_FENCE = re.compile(r"```.*?```", re.S)
_INLINE = re.compile(r"`[^`\n]*`")
_MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_LINK = re.compile(r"\]\([^)]*\)|<img[^>]*>|https?://\S+")
_FIGURE = re.compile(
    r"(?<![\w.,/+-])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(M\b)?"
    r"(?:(%)|\s?(min|minutes|s|seconds|ms|GB|MB|GiB|MiB|KB)\b)?(?![\w.]*\d)")


def prose_of(path: Path) -> list[tuple[str, str]]:
    """(where, text) of each prose block: a markdown file whole, a notebook's markdown cells one by one."""
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        return [(f"{path.name} cell {i}", "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
                for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"]
    return [(path.name, path.read_text(encoding="utf-8"))]


def figures_in(text: str) -> list[str]:
    for pattern in (_FENCE, _COMMENT, _INLINE, _MATH, _LINK):
        text = pattern.sub(" ", text)
    out = []
    for m in _FIGURE.finditer(text):
        whole, frac, mega, percent, unit = m.groups()
        if not (frac or percent or unit or mega):
            continue     # a bare integer: a count, a width, a year
        if re.fullmatch(r"0\d\.\d", m.group(0)):
            continue     # an exercise's number: 01.3 is notebook 01's third exercise
        out.append(m.group(0).strip() if not unit else (whole + (frac or "")))
    return out


def results_tokens() -> set[str]:
    text = RESULTS.read_text(encoding="utf-8")
    tokens = set(re.findall(r"\d[\d,]*(?:\.\d+)?%?M?", text))
    # a figure may be quoted rounded to fewer digits than the table prints: 39.93 min -> 39.9, 0.243 -> 0.24
    rounded = set()
    for t in tokens:
        m = re.fullmatch(r"([\d,]+)\.(\d+)(%?)", t)
        if m:
            value = float(m.group(1).replace(",", "") + "." + m.group(2))
            rounded |= {f"{value:,.{d}f}{m.group(3)}" for d in range(0, len(m.group(2)))}
    tokens |= {r for r in rounded if "." in r or r.endswith("%")}
    return tokens | {t.rstrip("%") for t in tokens}


def prose_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "docs" / "teaching.md", *sorted((ROOT / "notebooks").glob("*.ipynb"))]


def _results_or_skip() -> None:
    # docs/results.md is written from a finished default build (`make run`, then `make results`); until a
    # build has written it there is nothing to tie the prose to, and the skip says so in the test report
    if not RESULTS.exists():
        pytest.skip("docs/results.md is not written yet: run `make run`, then `make results`, and commit it")


def test_results_file_is_generated_with_its_build():
    _results_or_skip()
    text = RESULTS.read_text(encoding="utf-8")
    assert text.startswith("# Results, measured"), "docs/results.md is written by `make results`, not by hand"
    assert "generated by `python -m mono_utils report`" in text
    assert re.search(r"commit \*\*[0-9a-f]{7,}", text), "docs/results.md names no build commit"
    assert "cores" in text, "docs/results.md names no machine"


def test_every_quoted_figure_is_in_the_results():
    _results_or_skip()
    known = results_tokens()
    stale = []
    for path in prose_files():
        for where, text in prose_of(path):
            for fig in figures_in(text):
                bare = fig.rstrip("%")
                if fig in known or bare in known or fig in PAPER or fig in CONSTANTS:
                    continue
                stale.append(f"{where}: {fig}")
    assert not stale, (f"{len(stale)} figure(s) quoted in prose are not in docs/results.md (a stale figure, or one "
                       f"the report does not write): {stale[:40]}. Requote from docs/results.md (make results), "
                       f"add the figure to mono_utils/report.py, or, for a constant, to CONSTANTS with why")


def test_a_rounded_quote_counts(tmp_path, monkeypatch):
    results = tmp_path / "results.md"
    results.write_text("A/1 FVU 0.243, loss recovered 97.94%\n", encoding="utf-8")
    monkeypatch.setattr(__import__(__name__), "RESULTS", results)
    known = results_tokens()
    assert {"0.243", "0.24", "0.2", "97.9%", "98%"} <= known and "0.25" not in known and "0.3" not in known


@pytest.mark.parametrize("text, expected", [
    ("A/1 leaves 84% ultralow and FVU about 0.2, in 41 minutes", ["84%", "0.2", "41"]),
    ("`lr 1e-3` and $x_{0.5}$ and [a](x/0.3.md) <!-- 9.9 -->", []),
    ("512 neurons, 4,096 features, exercise 01.3, version 2.13.0", []),
    ("2.6 GB and 1,539 (38%)", ["2.6", "38%"]),
])
def test_figures_are_found_as_a_reader_sees_them(text, expected):
    assert figures_in(text) == expected
