"""The offline autointerp backend: a statistical explainer and simulator (a weak baseline).

No network and no downloaded weights; deterministic; a few milliseconds per unit. It is far
weaker than an LLM: the "explanation" is a table of the tokens on which the unit fires in
its explanation examples (mean 0-9 activation per token and per preceding token) plus the
tokens its output promotes, and the simulator looks tokens up in that table, reading it back
from the explanation text alone. It captures token-level and bigram units, not contexts,
meaning or syntax, so its scores are a lower bound on what an LLM explainer would reach.
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict

import numpy as np

from .autointerp import ExplainInput, LogitInput, ParseFailure, SimulateInput

_JSON_STR = r'"(?:[^"\\]|\\.)*"'
_ENTRY = re.compile(rf"({_JSON_STR}) \((\d)\)")
_TOKEN = re.compile(_JSON_STR)
SECTIONS = ("Fires on the tokens:", "Also fires right after:", "Output promotes:", "Seen in contexts like:")


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


def _char_class(tok: str) -> str:
    t = tok.strip()
    if not t:
        return "space"
    if any(ord(c) > 127 for c in t):
        from .data import script_of
        return "script:" + script_of(t)
    if t.isdigit():
        return "digit"
    if t.isalpha():
        return ("sp-" if tok[:1] == " " else "") + ("upper" if t.isupper() else "lower" if t.islower() else "alpha")
    if t.isalnum():
        return "alnum"
    return "punct"


def _predict(toks: list[str], on: dict, after: dict) -> np.ndarray:
    """A token's predicted activation: its own entry, or its predecessor's, whichever is larger."""
    return np.array([max(on.get(t, 0), after.get(toks[i - 1], 0) if i else 0) for i, t in enumerate(toks)], float)


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

    def __init__(self, max_tokens: int = 30, max_after: int = 10, min_mean: float = 1.0, shrink: float = 1.0):
        self.max_tokens, self.max_after, self.min_mean, self.shrink = max_tokens, max_after, min_mean, shrink

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
        # keep the account (current token, previous token, or both) that fits the examples best
        options = [(on, []), ([], aft), (on, aft)]
        errors = [self._sse(inp.examples, dict((t, m) for m, t in o), dict((t, m) for m, t in f)) for o, f in options]
        on, aft = options[int(np.argmin(errors))]
        parts = ["Statistical explanation (offline baseline)."]
        parts.append("Fires on the tokens: " + (", ".join(f"{_q(t)} ({m})" for m, t in on) or "none") + ".")
        if aft:
            parts.append("Also fires right after: " + ", ".join(f"{_q(t)} ({m})" for m, t in aft) + ".")
        if inp.top_logits:
            parts.append("Output promotes: " + ", ".join(_q(t) for t in inp.top_logits) + ".")
        if best[0] is not None:
            parts.append("Seen in contexts like: " + _q("".join(best[0]["tokens"])))
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
    def _sse(examples, on: dict, after: dict) -> float:
        err = 0.0
        for ex in examples:
            toks = ex["tokens"]
            pred = _predict(toks, on, after)
            err += float(np.sum((np.asarray(ex["acts"], float) - pred) ** 2))
        return err

    @staticmethod
    def parse_explanation(text: str) -> tuple[dict, dict, list[str]]:
        sec = _sections(text)
        if "Fires on the tokens:" not in sec:
            raise ParseFailure("the explanation has no 'Fires on the tokens:' section (not an offline "
                               "explanation: use the backend that wrote it)")
        def entries(s):
            return {json.loads(t): int(v) for t, v in _ENTRY.findall(s)}
        promoted = [json.loads(t) for t in _TOKEN.findall(sec.get("Output promotes:", ""))]
        return entries(sec["Fires on the tokens:"]), entries(sec.get("Also fires right after:", "")), promoted

    def simulate(self, inp: SimulateInput) -> list[list[float]]:
        on, after, _ = self.parse_explanation(inp.explanation)
        return [_predict(toks, on, after).tolist() for toks in inp.examples]

    def label_logits(self, inp: LogitInput) -> list[bool]:
        """Rank tokens by likeness to the promoted (and firing) tokens; label the top half."""
        on, _, promoted = self.parse_explanation(inp.explanation)
        ref = promoted or list(on)
        classes = Counter(_char_class(t) for t in ref)
        grams = {t.strip().lower()[i:i + 2] for t in ref for i in range(max(1, len(t.strip()) - 1))}
        def sim(t):
            s = t.strip().lower()
            g = {s[i:i + 2] for i in range(max(1, len(s) - 1))}
            return classes.get(_char_class(t), 0) / max(1, len(ref)) + len(g & grams) / max(1, len(g))
        scores = np.array([sim(t) for t in inp.tokens])
        order = np.argsort(-scores, kind="stable")
        out = np.zeros(len(scores), bool)
        out[order[: len(scores) // 2]] = True
        return out.tolist()

    def estimate(self, n_units: int) -> dict:
        return {"backend": self.name, "calls": 0, "cached": 0, "input_tokens": 0, "output_tokens": 0,
                "note": "offline: no API calls"}


