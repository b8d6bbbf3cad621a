"""Exact attribution graphs of a one-layer model whose MLP is replaced by a transcoder.

For one prompt, freeze the attention patterns ``A_h[i, j]`` and the three LayerNorm scales
(``sigma1_j``, ``sigma2_i``, ``sigma_f``) at their values on that prompt. Then, with
``L(v) = (v - mean v) / sigma * w`` the linear part of a LayerNorm, ``e_j = W_E[t_j] + W_pos[j]`` the
input of position j (a *token node*) and ``OV_h = W_V_h W_O_h``:

    resid_mid_i = e_i + sum_h sum_{j<=i} A_h[i,j] L1_j(e_j) OV_h  +  const_i          (linear in the e_j)
    mlp_in_i    = L2_i(resid_mid_i) + b2
    pre_f,i     = mlp_in_i . W_enc[:, f] + b_enc[f]          (the transcoder's feature f at position i)
    mlp_out_i   = sum_f a_f,i W_dec[f] + b_dec + mlp_in_i W_skip  +  err_i     (err_i: the *error node*)
    logit_t     = (resid_mid_T + mlp_out_T) . g + b_f . W_U[:, t] + b_U[t],   g = centre(w_f * W_U[:, t]) / sigma_f

Every term is a sum over sources, so each node's value is exactly the sum of its incoming edges:

- token j -> feature (f, i):  W_enc[:, f] . L2_i(c_ij), with c_ij = [i == j] e_i + sum_h A_h[i,j] L1_j(e_j) OV_h;
- token j -> logit:           c_Tj . g + L2_T(c_Tj) W_skip . g   (direct, through attention, through the skip);
- feature (f, T) -> logit:    a_f,T W_dec[f] . g  (activation x virtual weight);
- error T -> logit:           err_T . g;
- bias -> each node:          every constant (LayerNorm, attention, transcoder and unembedding biases).

A JumpReLU feature that fires has a_f = pre_f, so the edges into it sum to its activation. There
are no feature -> feature edges (one layer), and a feature at a position before T reaches no logit
(no later layer reads that position): those nodes have incoming edges only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.tokenizer import EOT, encode, readable_text, readable_tokens as token_strings  # as the atlas shows text
from ..core.transcoder import HOOK_MLP_IN, HOOK_MLP_OUT

KINDS = ("token", "feature", "error", "bias", "logit")


@dataclass
class AttributionGraph:
    """Nodes and exact edges for one prompt and one target logit (see the module's docstring).

    ``nodes``: a list of dicts (``id``, ``kind``, ``pos``, ``feature``, ``value``, ``label``); the value
    of a feature is its activation, of the logit the logit, of a token or error node the norm of its
    vector (for display only: those are sources). ``src``, ``dst``, ``weight``: the edges, as indices
    into ``nodes`` and their contribution to the target's value."""
    tokens: list[int]
    str_tokens: list[str]
    target: int
    target_str: str
    nodes: list[dict]
    src: np.ndarray
    dst: np.ndarray
    weight: np.ndarray
    frozen: dict = field(default_factory=dict)   # the frozen scales and patterns, for exercises
    contrast: int | str | None = None            # None: the raw logit; "mean": minus the mean logit; id: minus that logit

    def readout(self, logits: torch.Tensor) -> float:
        """The graph's logit node read from a row of logits [vocab] (the same contrast)."""
        value = logits[self.target]
        if self.contrast == "mean":
            value = value - logits.mean()
        elif self.contrast is not None:
            value = value - logits[int(self.contrast)]
        return float(value)

    @property
    def index(self) -> dict[str, int]:
        return {n["id"]: i for i, n in enumerate(self.nodes)}

    def node(self, node_id: str) -> dict:
        try:
            return self.nodes[self.index[node_id]]
        except KeyError:
            raise KeyError(f"no node {node_id!r} in the graph: node ids look like 'logit', 'bias', 'tok:3', "
                           f"'err:5', 'feat:5:123' (position 5, feature 123); see graph.nodes") from None

    def edges_into(self, node_id: str) -> dict[str, float]:
        """``{source id: weight}`` of the edges into ``node_id``."""
        t = self.index[self.node(node_id)["id"]]
        sel = self.dst == t
        return {self.nodes[s]["id"]: float(w) for s, w in zip(self.src[sel], self.weight[sel])}

    def edge(self, source: str, target: str) -> float:
        into = self.edges_into(target)
        if source not in into:
            raise KeyError(f"no edge {source} -> {target}")
        return into[source]

    def completeness_gaps(self) -> dict[str, float]:
        """For every node with incoming edges (features, the logit): its value minus the sum of its
        incoming edges. Exact up to float rounding."""
        sums = np.zeros(len(self.nodes))
        np.add.at(sums, self.dst, self.weight)
        return {n["id"]: float(n["value"] - sums[i]) for i, n in enumerate(self.nodes)
                if n["kind"] in ("feature", "logit") and (self.dst == i).any()}

    @property
    def logit(self) -> float:
        return self.node("logit")["value"]

    def features(self, position: int | None = None) -> list[dict]:
        """The feature nodes (at ``position``; default every position)."""
        return [n for n in self.nodes if n["kind"] == "feature" and (position is None or n["pos"] == position)]

    def replacement_score(self) -> float:
        """Share of the logit's incoming |attribution| from features and errors that the features carry
        (1: the transcoder explains everything the MLP adds; 0: the error does)."""
        into = self.edges_into("logit")
        feat = sum(abs(w) for k, w in into.items() if k.startswith("feat:"))
        err = sum(abs(w) for k, w in into.items() if k.startswith("err:"))
        return feat / (feat + err) if feat + err > 0 else float("nan")

    def edge_scores(self) -> np.ndarray:
        """How much of the logit's attribution each edge carries: an edge into the logit carries
        ``|w| / sum |w into logit|``; an edge into a feature carries its share of the feature's incoming
        |edges| times the feature's own score (the sum of its outgoing edges' scores). The edges into
        the logit carry 1 in all; those into features, the features' share of it."""
        n = len(self.nodes)
        absw = np.abs(self.weight)
        into_abs = np.zeros(n)
        np.add.at(into_abs, self.dst, absw)
        influence = np.zeros(n)
        influence[self.index["logit"]] = 1.0
        scores = np.zeros(len(self.weight))
        to_logit = self.dst == self.index["logit"]
        scores[to_logit] = absw[to_logit] / max(into_abs[self.index["logit"]], 1e-30)
        np.add.at(influence, self.src[to_logit], scores[to_logit])
        rest = ~to_logit   # edges into features (one layer: their sources are tokens and the bias)
        scores[rest] = absw[rest] / np.maximum(into_abs[self.dst[rest]], 1e-30) * influence[self.dst[rest]]
        return scores

    def prune(self, share: float = 0.8) -> "AttributionGraph":
        """The smallest set of edges, highest scores first (``edge_scores``), that carries ``share`` of
        the graph's total score; the nodes they touch and the logit. Values stay the full graph's, so a
        pruned node's incoming edges no longer sum to its value (the gap is what was pruned)."""
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share!r}: e.g. 0.8 keeps the edges carrying 80%")
        scores = self.edge_scores()
        order = np.argsort(-scores, kind="stable")
        cum = np.cumsum(scores[order])
        keep_n = int(np.searchsorted(cum, share * cum[-1] - 1e-12) + 1) if len(cum) else 0
        keep = np.sort(order[:keep_n])
        used = sorted(set(self.src[keep].tolist()) | set(self.dst[keep].tolist()) | {self.index["logit"]})
        remap = {old: new for new, old in enumerate(used)}
        return AttributionGraph(self.tokens, self.str_tokens, self.target, self.target_str,
                                [self.nodes[i] for i in used], np.array([remap[s] for s in self.src[keep]], dtype=np.int64),
                                np.array([remap[d] for d in self.dst[keep]], dtype=np.int64), self.weight[keep].copy(),
                                self.frozen, self.contrast)

    def to_frame(self):
        """The edges as a DataFrame (source, target, weight), largest |weight| first."""
        import pandas as pd  # lazy: pandas is heavy; only views need it
        df = pd.DataFrame({"source": [self.nodes[s]["id"] for s in self.src],
                           "target": [self.nodes[d]["id"] for d in self.dst], "weight": self.weight})
        return df.reindex(df.weight.abs().sort_values(ascending=False).index).reset_index(drop=True)


# ---------------------------------------------------------------- computing a graph
def prompt_tokens(tokenizer, prompt: str, n_ctx: int) -> list[int]:
    """BOS + the prompt's tokens (as the model saw text in training), the last ``n_ctx``."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("the prompt must be a non-empty string")
    ids = [tokenizer.convert_tokens_to_ids(EOT)] + encode(tokenizer, prompt)
    return ids[-n_ctx:]


def _frozen_forward(model, tokens: torch.Tensor) -> dict:
    """Everything the graph freezes or reads, from one clean forward pass."""
    names = ["blocks.0.attn.hook_pattern", "blocks.0.ln1.hook_scale", "blocks.0.ln2.hook_scale", "ln_final.hook_scale",
             HOOK_MLP_IN, HOOK_MLP_OUT, "blocks.0.hook_resid_mid"]
    box = {}

    def grab(name):
        def fn(act, hook):
            box[name] = act.detach()[0].clone()
            return act
        return fn

    logits = model.run_with_hooks(tokens[None], fwd_hooks=[(n, grab(n)) for n in names])
    box["logits"] = logits.detach()[0]
    return box


def _layer_norm_linear(v: torch.Tensor, scale: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The linear part of a LayerNorm with its scale frozen: (v - mean v) / scale * w."""
    return (v - v.mean(-1, keepdim=True)) / scale * w


@torch.no_grad()
def attribution_graph(model, transcoder, tokenizer, prompt: str | None = None, *, tokens=None,
                      target: int | str | None = None, contrast: int | str | None = None) -> AttributionGraph:
    """The exact attribution graph of ``prompt`` (or token ids ``tokens``, BOS first) for the logit of
    ``target`` at the last position (a token id, a token string, or None: the model's top prediction).

    ``contrast``: None reads the raw logit; ``"mean"`` the logit minus the mean logit (what the softmax
    sees: a shift of every logit changes nothing); a token (id or string; ``"runner-up"``: the model's
    second choice) the logit difference. Every reading is linear in the residual, so the graph stays
    exact; the contrasts are less sensitive to the final LayerNorm's scale, the one thing an intervention
    un-freezes (see ``circuits.interventions``).

    ``transcoder``: a :class:`core.transcoder.Transcoder` of ``model``'s MLP (``get_transcoder``)."""
    n_ctx = int(model.cfg.n_ctx)
    if tokens is None:
        if prompt is None:
            raise ValueError("pass a prompt (text) or tokens (ids, BOS first)")
        tokens = prompt_tokens(tokenizer, prompt, n_ctx)
    tokens = [int(t) for t in tokens]
    if not 1 <= len(tokens) <= n_ctx:
        raise ValueError(f"{len(tokens)} tokens: the model reads 1..{n_ctx}; shorten the prompt")
    if transcoder.cfg.d_in != int(model.cfg.d_model):
        raise ValueError(f"the transcoder reads d_in = {transcoder.cfg.d_in}, the model's d_model is "
                         f"{model.cfg.d_model}: pass the transcoder of this model (get_transcoder(preset))")
    trc = transcoder.eval()
    if next(model.parameters()).device.type != "cpu" or trc.device.type != "cpu":
        raise ValueError("attribution graphs are computed on the CPU: pass the model and transcoder on the CPU")
    tok = torch.tensor(tokens)
    fw = _frozen_forward(model, tok)
    T = len(tokens)
    vocab = fw["logits"].shape[-1]
    ranked = fw["logits"][-1].argsort(descending=True)
    target = int(ranked[0]) if target is None else _token_id(tokenizer, target, vocab, "target")
    if contrast == "runner-up":
        contrast = int(ranked[1]) if int(ranked[0]) == target else int(ranked[0])
    if contrast not in (None, "mean"):
        contrast = _token_id(tokenizer, contrast, vocab, "contrast")
        if contrast == target:
            raise ValueError("the contrast token is the target: their difference is 0; pick another token")

    f32 = torch.float32
    blk = model.blocks[0]
    w1, b1 = blk.ln1.w.detach().to(f32), blk.ln1.b.detach().to(f32)
    w2, b2 = blk.ln2.w.detach().to(f32), blk.ln2.b.detach().to(f32)
    wf, bf = model.ln_final.w.detach().to(f32), model.ln_final.b.detach().to(f32)
    W_V, b_V = model.W_V[0].detach(), model.b_V[0].detach()          # [H, d, dh], [H, dh]
    W_O, b_O = model.W_O[0].detach(), model.b_O[0].detach()          # [H, dh, d], [d]
    W_U, b_U = model.W_U.detach(), model.b_U.detach()
    A = fw["blocks.0.attn.hook_pattern"]                             # [H, T, T]
    s1, s2, sf = fw["blocks.0.ln1.hook_scale"], fw["blocks.0.ln2.hook_scale"], fw["ln_final.hook_scale"]

    e = model.W_E.detach()[tok] + model.W_pos.detach()[:T]          # token nodes [T, d]
    OV = torch.einsum("hde,hef->hdf", W_V, W_O)                      # [H, d, d]
    V = torch.einsum("jd,hdf->hjf", _layer_norm_linear(e, s1, w1), OV)   # each source's value through each head
    C = torch.einsum("hij,hjf->ijf", A, V)                           # c_ij [T(target), T(source), d]
    C[torch.arange(T), torch.arange(T)] += e                         # the direct path
    v_const = torch.einsum("d,hde->he", b1, W_V) + b_V               # b1's and b_V's part of every value
    const = torch.einsum("hij,he,hef->if", A, v_const, W_O) + b_O    # [T, d]
    M = _layer_norm_linear(C, s2[:, None], w2)                       # L2_i(c_ij) [T, T, d]
    M_const = _layer_norm_linear(const, s2, w2) + b2                 # [T, d]

    x = fw[HOOK_MLP_IN]
    f_acts = trc.encode(x)                                           # [T, d_sae]
    y_hat = trc.decode(f_acts, x)
    err = fw[HOOK_MLP_OUT] - y_hat
    u = W_U[:, target] - (W_U.mean(1) if contrast == "mean" else W_U[:, contrast] if contrast is not None else 0)
    b_u = b_U[target] - (b_U.mean() if contrast == "mean" else b_U[contrast] if contrast is not None else 0)
    g = wf * u
    g = (g - g.mean()) / sf[-1]

    nodes, src, dst, wts = [], [], [], []
    str_tokens = token_strings(tokenizer, tokens)
    for j in range(T):
        nodes.append({"id": f"tok:{j}", "kind": "token", "pos": j, "feature": None, "value": float(e[j].norm()),
                      "label": f"{j}: {str_tokens[j]!r}"})
    for i in range(T):
        nodes.append({"id": f"err:{i}", "kind": "error", "pos": i, "feature": None, "value": float(err[i].norm()),
                      "label": f"error @{i}"})
    bias_id = len(nodes)
    nodes.append({"id": "bias", "kind": "bias", "pos": None, "feature": None, "value": 1.0, "label": "biases"})
    logit_id = len(nodes)
    graph_stub = AttributionGraph(tokens, [], target, "", [], np.zeros(0), np.zeros(0), np.zeros(0), {}, contrast)
    logit = graph_stub.readout(fw["logits"][-1])
    what = "" if contrast is None else " - mean" if contrast == "mean" else f" - {readable_text(tokenizer, [contrast])!r}"
    nodes.append({"id": "logit", "kind": "logit", "pos": T - 1, "feature": None, "value": logit,
                  "label": f"logit {readable_text(tokenizer, [target])!r}{what}"})
    for i in range(T):
        active = (f_acts[i] > 0).nonzero()[:, 0]
        if not len(active):
            continue
        enc = trc.W_enc[:, active]                                   # [d, k]
        tok_edges = M[i, : i + 1] @ enc                              # [i+1, k]: only j <= i attend
        bias_edges = M_const[i] @ enc + trc.b_enc[active]
        for c, f in enumerate(active.tolist()):
            fid = len(nodes)
            nodes.append({"id": f"feat:{i}:{f}", "kind": "feature", "pos": i, "feature": f,
                          "value": float(f_acts[i, f]), "label": f"F{f} @{i}"})
            src += list(range(i + 1)) + [bias_id]
            dst += [fid] * (i + 2)
            wts += tok_edges[:, c].tolist() + [float(bias_edges[c])]
            if i == T - 1:
                src.append(fid)
                dst.append(logit_id)
                wts.append(float(f_acts[i, f] * (trc.W_dec[f] @ g)))
    # into the logit: tokens (direct + attention + the skip), the last position's error, the constants
    skip = trc.W_skip if trc.W_skip is not None else torch.zeros(trc.cfg.d_in, trc.cfg.d_out)
    tok_logit = C[T - 1] @ g + (M[T - 1] @ skip) @ g                 # [T]
    const_logit = (const[T - 1] @ g + (M_const[T - 1] @ skip) @ g + trc.b_dec @ g
                   + bf @ u + b_u)
    src += list(range(T)) + [T + T - 1, bias_id]
    dst += [logit_id] * (T + 2)
    wts += tok_logit.tolist() + [float(err[T - 1] @ g), float(const_logit)]
    frozen = {"ln_final_scale": float(sf[-1]), "ln2_scale": s2[:, 0].tolist(), "g": g, "pattern": A}
    return AttributionGraph(tokens, str_tokens, target, readable_text(tokenizer, [target]), nodes,
                            np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64),
                            np.asarray(wts, dtype=np.float64), frozen, contrast)


def _token_id(tokenizer, token: int | str, vocab: int, what: str) -> int:
    if isinstance(token, str):
        ids = encode(tokenizer, token)
        if len(ids) != 1:
            raise ValueError(f"{what} {token!r} is {len(ids)} tokens, not one: pass a single token (or its id)")
        token = ids[0]
    if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= int(token) < vocab:
        raise ValueError(f"{what} {token!r} is not a token id of the vocabulary (0..{vocab - 1}) nor a one-token string")
    return int(token)
