"""The offline autointerp backend: a statistical explainer and simulator (a weak baseline).

No network and no downloaded weights; deterministic; a few milliseconds per unit. It is far
weaker than an LLM: the "explanation" is a table of the tokens on which the unit fires in
its explanation examples (mean 0-9 activation per token and per preceding token) plus the
tokens its output promotes, and the simulator looks tokens up in that table, reading it back
from the explanation text alone. It captures token-level and bigram units, not contexts,
meaning or syntax, so its scores are a lower bound on what an LLM explainer would reach.

Its **output-side** mode (:meth:`OfflineBackend.explain_output`, ``autointerp.output_side``) explains
what a unit *does* instead: the tokens it promotes and suppresses (its logit weights) and the next
tokens whose prediction it measurably helps where it fires, each with a 0-9 level. Its simulator
reads such an explanation the other way round: a unit that helps predict ``t`` is predicted active
right before ``t``.
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from functools import lru_cache

import numpy as np

from ..core.corpus import script_of
from .protocol import ExplainInput, LogitInput, OutputExplainInput, ParseFailure, SimulateInput

_JSON_STR = r'"(?:[^"\\]|\\.)*"'
_ENTRY = re.compile(rf"({_JSON_STR}) \((\d)\)")
_TOKEN = re.compile(_JSON_STR)
SECTIONS = ("Fires on the tokens:", "Also fires on other tokens of these kinds:", "Also fires right after:",
            "Output promotes:", "Seen in contexts like:", "Output suppresses:", "Helps predict the next token:",
            "Hurts predicting the next token:")
OUTPUT_HEADER = "Statistical explanation of the output side (offline baseline"


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _sections(text: str) -> dict[str, str]:
    """Split an offline explanation into its named sections."""
    spans = sorted((text.find(s), s) for s in SECTIONS if s in text)
    out = {}
    for k, (i, name) in enumerate(spans):
        end = spans[k + 1][0] if k + 1 < len(spans) else len(text)
        out[name] = text[i + len(name):end]
    return out


@lru_cache(maxsize=65536)
def token_class(tok: str) -> str:
    """A coarse, readable class of a token (script, ACGT letters, digits, word shape...)."""
    t = tok.strip()
    if not t:
        return "whitespace"
    if "\ufffd" in t:
        return "partial character bytes"
    if any(ord(c) > 127 for c in t):
        return f"{script_of(t)} script"
    if len(t) >= 2 and set(t) <= set("ACGT"):
        return "ACGT letters"
    if t.isdigit():
        return "digits"
    if t.isalpha():
        shape = "uppercase" if t.isupper() else "lowercase" if t.islower() else "capitalised" if t[0].isupper() else "mixed-case"
        return f"{shape} {'word' if tok[:1] == ' ' else 'piece'}"
    if t.isalnum():
        return "letters and digits"
    return "punctuation"


def _marked(tokens: list[str], acts: list[int]) -> str:
    """A context as the explainer's prompt shows it: each active token as ``«token:N»`` (N its 0-9 level).

    A reader sees where the unit fired, and a quoted run of digits (a constant in code) is cut by the
    marks where the unit fires on it, instead of reading as one long number."""
    return "".join(f"\u00ab{t}:{a}\u00bb" if a > 0 else t for t, a in zip(tokens, acts))


def _predict_before(toks: list[str], before: dict) -> np.ndarray:
    """Each token gets the level of the token that follows it (0 for the last: nothing visible follows)."""
    out = np.zeros(len(toks))
    for i in range(len(toks) - 1):
        out[i] = before.get(toks[i + 1], 0)
    return out


def _predict(toks: list[str], on: dict, after: dict, classes: dict | None = None) -> np.ndarray:
    """A token's own entry (else its class's), or its predecessor's entry, whichever is larger."""
    classes = classes or {}
    out = np.zeros(len(toks))
    for i, t in enumerate(toks):
        v = on[t] if t in on else classes.get(token_class(t), 0) if classes else 0
        if i and toks[i - 1] in after:
            v = max(v, after[toks[i - 1]])
        out[i] = v
    return out


class OfflineBackend:
    """A statistical explainer and simulator: no network, no weights, deterministic.

    A **weak baseline**, far below an LLM: the explanation is a table of the tokens on which
    the unit fires in its explanation examples (mean 0-9 activation per token, and per
    preceding token) and the tokens its output promotes; the simulator looks tokens up in
    that table, reading it back from the explanation text alone. It can capture token-level
    and bigram features, not contexts, meaning or syntax.
    """
    name = "offline"
    concurrency = 1

    def __init__(self, max_tokens: int = 30, max_after: int = 10, max_classes: int = 4, min_mean: float = 1.0,
                 shrink: float = 1.0):
        self.max_tokens, self.max_after, self.max_classes = max_tokens, max_after, max_classes
        self.min_mean, self.shrink = min_mean, shrink

    def explain(self, inp: ExplainInput) -> str:
        cur, prev = defaultdict(list), defaultdict(list)
        best = (None, -1)
        for ex in inp.examples:
            toks, acts = ex["tokens"], ex["acts"]
            for i, (t, a) in enumerate(zip(toks, acts)):
                cur[t].append(a)
                if i:
                    prev[toks[i - 1]].append(a)
                if a > best[1]:
                    best = (ex, a)
        on = self._table(cur, self.max_tokens, self.min_mean)
        aft = self._table(prev, self.max_after, self.min_mean)
        known = {t for _, t in on}
        by_class = defaultdict(list)       # token classes, on positions the token table does not cover
        for ex in inp.examples:
            for t, a in zip(ex["tokens"], ex["acts"]):
                if t not in known:
                    by_class[token_class(t)].append(a)
        cls = self._table(by_class, self.max_classes, self.min_mean)
        # keep the account that fits the explanation examples best (simplest first on ties)
        options = [(on, [], []), ([], aft, []), (on, aft, []), (on, [], cls), (on, aft, cls)]
        errors = [self._sse(inp.examples, *(dict((t, m) for m, t in x) for x in o)) for o in options]
        on, aft, cls = options[int(np.argmin(errors))]
        parts = ["Statistical explanation (offline baseline)."]
        parts.append("Fires on the tokens: " + (", ".join(f"{_q(t)} ({m})" for m, t in on) or "none") + ".")
        if cls:
            parts.append("Also fires on other tokens of these kinds: " + ", ".join(f"{_q(t)} ({m})" for m, t in cls) + ".")
        if aft:
            parts.append("Also fires right after: " + ", ".join(f"{_q(t)} ({m})" for m, t in aft) + ".")
        if inp.top_logits:
            parts.append("Output promotes: " + ", ".join(_q(t) for t in inp.top_logits) + ".")
        if best[0] is not None:
            parts.append("Seen in contexts like: " + _q(_marked(best[0]["tokens"], best[0]["acts"])))
        return " ".join(parts)

    def explain_output(self, inp: OutputExplainInput) -> str:
        """The output side as text in the style of :meth:`explain`: what the unit promotes and suppresses
        (logit weights) and, measured where it fires, the next tokens it helps and hurts, each with a level."""
        entries = lambda pairs: ", ".join(f"{_q(t)} ({int(m)})" for t, m in pairs)  # noqa: E731
        head = OUTPUT_HEADER + (f"; effects measured at {inp.contexts} positions where it fires)." if inp.contexts
                                else "; no measured effects).")
        parts = [head, "Output promotes: " + (entries(zip(inp.top_logits, inp.top_levels)) or "none") + "."]
        if inp.bottom_logits:
            parts.append("Output suppresses: " + ", ".join(_q(t) for t in inp.bottom_logits) + ".")
        if inp.helped:
            parts.append("Helps predict the next token: " + entries(inp.helped) + ".")
        if inp.hurt:
            parts.append("Hurts predicting the next token: " + entries(inp.hurt) + ".")
        return " ".join(parts)

    def _table(self, stats, limit, floor) -> list[tuple[int, str]]:
        """(rounded shrunk mean, token) for the tokens that explain the most squared activation."""
        rows = []
        for t, v in stats.items():
            m = sum(v) / (len(v) + self.shrink)       # shrink towards 0: one sighting is weak evidence
            if m >= floor:
                rows.append((-len(v) * m * m, t, min(9, int(round(m)))))
        rows.sort()
        return [(m, t) for _, t, m in rows[:limit]]

    @staticmethod
    def _sse(examples, on: dict, after: dict, classes: dict) -> float:
        err = 0.0
        for ex in examples:
            toks = ex["tokens"]
            pred = _predict(toks, on, after, classes)
            err += float(np.sum((np.asarray(ex["acts"], float) - pred) ** 2))
        return err

    @staticmethod
    def is_output_side(text: str) -> bool:
        return text.startswith(OUTPUT_HEADER)

    @staticmethod
    def parse_output_explanation(text: str) -> dict:
        """``{"promoted", "helped", "hurt": {token: 0-9}, "suppressed": [token]}`` from an output-side text."""
        if not OfflineBackend.is_output_side(text):
            raise ParseFailure("not an offline output-side explanation (it does not begin with "
                               f"{OUTPUT_HEADER!r}): use the backend that wrote it")
        sec = _sections(text)
        def entries(s):
            return {json.loads(t): int(v) for t, v in _ENTRY.findall(s)}
        return {"promoted": entries(sec.get("Output promotes:", "")), "helped": entries(sec.get("Helps predict the next token:", "")),
                "hurt": entries(sec.get("Hurts predicting the next token:", "")),
                "suppressed": [json.loads(t) for t in _TOKEN.findall(sec.get("Output suppresses:", ""))]}

    @staticmethod
    def parse_explanation(text: str) -> dict:
        """``{"on", "classes", "after": {token or class: 0-9}, "promoted": [token]}`` from the text."""
        sec = _sections(text)
        if "Fires on the tokens:" not in sec:
            raise ParseFailure("the explanation has no 'Fires on the tokens:' section (not an offline "
                               "explanation: use the backend that wrote it)")
        def entries(s):
            return {json.loads(t): int(v) for t, v in _ENTRY.findall(s)}
        promoted = [json.loads(t) for t in _TOKEN.findall(sec.get("Output promotes:", ""))]
        return {"on": entries(sec["Fires on the tokens:"]), "after": entries(sec.get("Also fires right after:", "")),
                "classes": entries(sec.get("Also fires on other tokens of these kinds:", "")), "promoted": promoted}

    def simulate(self, inp: SimulateInput) -> list[list[float]]:
        if self.is_output_side(inp.explanation):
            # what it does, read backwards: active right before a token it helps predict (its measured
            # level) or promotes (its logit level), whichever is larger
            e = self.parse_output_explanation(inp.explanation)
            before = dict(e["promoted"])
            for t, m in e["helped"].items():
                before[t] = max(m, before.get(t, 0))
            return [_predict_before(toks, before).tolist() for toks in inp.examples]
        e = self.parse_explanation(inp.explanation)
        return [_predict(toks, e["on"], e["after"], e["classes"]).tolist() for toks in inp.examples]

    def label_logits(self, inp: LogitInput) -> list[bool]:
        """Rank tokens by likeness to the promoted (and firing) tokens; label the top half."""
        if self.is_output_side(inp.explanation):
            e = self.parse_output_explanation(inp.explanation)
            ref = list(e["promoted"]) + [t for t in e["helped"] if t not in e["promoted"]]
        else:
            e = self.parse_explanation(inp.explanation)
            ref = e["promoted"] or list(e["on"])
        classes = Counter(token_class(t) for t in ref)
        grams = {t.strip().lower()[i:i + 2] for t in ref for i in range(max(1, len(t.strip()) - 1))}
        def sim(t):
            s = t.strip().lower()
            g = {s[i:i + 2] for i in range(max(1, len(s) - 1))}
            return classes.get(token_class(t), 0) / max(1, len(ref)) + len(g & grams) / max(1, len(g))
        scores = np.array([sim(t) for t in inp.tokens])
        order = np.argsort(-scores, kind="stable")
        out = np.zeros(len(scores), bool)
        out[order[: len(scores) // 2]] = True
        return out.tolist()

    def estimate(self, n_units: int) -> dict:
        return {"backend": self.name, "calls": 0, "cached": 0, "input_tokens": 0, "output_tokens": 0,
                "note": "offline: no API calls"}






