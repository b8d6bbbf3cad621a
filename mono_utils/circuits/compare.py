"""The transcoder's features beside A/1's: does each dictionary have a feature for each domain?

For every unit and corpus label (subdomain: dna, base64, hebrew, python, ...) on held-out rows:
*precision*, the share of the unit's firings that fall on the label's tokens, and *recall*, the share of
the label's tokens where it fires; their harmonic mean (F1) picks each dictionary's best unit per label
(the steering catalog's choice of a domain feature, on both dictionaries)."""
from __future__ import annotations

import numpy as np
import torch

from ..core.model import HOOK_MLP_POST
from ..core.transcoder import HOOK_MLP_IN


class _Stop(Exception):
    pass


@torch.no_grad()
def _fire_counts(model, transcoder, sae, tokens: np.ndarray, labels: np.ndarray, n_labels: int, batch_rows: int):
    """[units, labels] firing counts of the transcoder's and the SAE's units, and each label's token count."""
    counts = {"transcoder": torch.zeros(transcoder.cfg.d_sae, n_labels, dtype=torch.float64),
              "A/1": torch.zeros(sae.cfg.d_sae, n_labels, dtype=torch.float64)}
    n_label = torch.zeros(n_labels, dtype=torch.float64)
    for s in range(0, len(tokens), batch_rows):
        tok = torch.from_numpy(tokens[s:s + batch_rows].astype(np.int64))
        lab = torch.from_numpy(labels[s:s + batch_rows, 1:].astype(np.int64)).reshape(-1)   # position 0: BOS
        box = {}

        def keep(name, stop=False):
            def fn(act, hook):
                box[name] = act.detach()
                if stop:
                    raise _Stop
                return act
            return fn

        try:
            model.run_with_hooks(tok, fwd_hooks=[(HOOK_MLP_IN, keep("in")), (HOOK_MLP_POST, keep("post", True))])
        except _Stop:
            pass
        onehot = torch.nn.functional.one_hot(lab, n_labels).double()
        n_label += onehot.sum(0)
        for name, acts in (("transcoder", transcoder.encode(box["in"][:, 1:])), ("A/1", sae.encode(box["post"][:, 1:]))):
            counts[name] += (acts.reshape(-1, acts.shape[-1]) > 0).double().t() @ onehot
    return counts, n_label


def domain_feature_table(model, transcoder, sae, tokens: np.ndarray, labels: np.ndarray, label_names: list[str],
                         wanted=("dna", "base64", "hebrew", "python"), *, batch_rows: int = 32):
    """One row per label of ``wanted`` (present in ``label_names``) and dictionary: its best unit by F1 and
    that unit's F1, precision and recall on ``tokens`` [rows, n_ctx] with per-token ``labels`` (ids into
    ``label_names``)."""
    import pandas as pd  # lazy: pandas is heavy; only this view needs it
    names = [w for w in wanted if w in label_names]
    if not names:
        raise ValueError(f"none of {list(wanted)} is a label of this corpus: choose among {label_names}")
    counts, n_label = _fire_counts(model, transcoder, sae, tokens, labels, len(label_names), batch_rows)
    rows = []
    for name in names:
        j = label_names.index(name)
        for dictionary, c in counts.items():
            fires = c.sum(1)
            precision = c[:, j] / fires.clamp_min(1)
            recall = c[:, j] / max(float(n_label[j]), 1.0)
            f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
            u = int(f1.argmax())
            rows.append({"label": name, "dictionary": dictionary, "unit": u, "F1": float(f1[u]),
                         "precision": float(precision[u]), "recall": float(recall[u]),
                         "label tokens": int(n_label[j])})
    return pd.DataFrame(rows)
