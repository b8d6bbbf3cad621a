"""Feature steering: clamp, add or ablate SAE features in ``blocks.0.mlp.hook_post`` and sample.

An :class:`Intervention` edits one feature at chosen positions (``None`` = every position,
prompt and generated). Edits are applied to the MLP activations ``x`` as

* ``keep_error=True`` (default, the paper's advice): ``x + decode(f_edit) - decode(f)`` =
  ``x + (f_edit - f) @ W_dec``, so the SAE's reconstruction error stays in and the edit is
  not undone (clamping a feature to its current value changes nothing);
* ``keep_error=False`` (plain replacement): ``decode(f_edit)`` at positions where some
  intervention applies (other positions keep ``x``); this also drops the SAE's error there.

Modes: ``clamp`` sets f_i := value; ``add`` adds value times the feature's decoder direction
(f_i += value); ``ablate`` sets f_i := 0 (the paper's x - f_i d_i).

Two backends give the same numbers: ``"hooks"`` runs the TransformerLens model with a hook on
``blocks.0.mlp.hook_post`` (hooks are removed even if generation raises); ``"fast"``
(:class:`FastLM`) runs the same weights with a key/value cache, so 40 tokens take
milliseconds instead of seconds. Sampling matches ``mono_utils.model.sample`` (same seed, no
intervention: the same text).
"""
from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..core.model import HOOK_MLP_POST
from ..core.tokenizer import EOT, encode, readable_each, readable_text, str_tokens

MODES = ("clamp", "add", "ablate")
# Documented ranges. A feature's activations are in the tens (the widget's sliders span a few
# times a feature's max), so |value| <= MAX_STEER leaves room for any experiment while keeping
# float32 far from overflow; temperatures below MIN_TEMPERATURE overflow the softmax (use 0: greedy).
MAX_STEER = 1e4
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-3, 100.0
# below this top_p keeps only the likeliest token (temperature 0 says so plainly), and float32
# rounds a top_p under ~1e-45 to 0, which would keep none
MIN_TOP_P = 1e-6


# ---------------------------------------------------------------- interventions
@dataclass(frozen=True)
class Intervention:
    feature: int
    mode: str = "clamp"
    value: float = 0.0
    positions: tuple[int, ...] | None = None  # absolute positions (0 = BOS); None: all

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown steering mode {self.mode!r}: choose one of {MODES}")
        if isinstance(self.feature, bool) or not isinstance(self.feature, (int, np.integer)):
            raise ValueError(f"feature must be an integer index, got {self.feature!r}")
        try:
            v = float(self.value)
        except (TypeError, ValueError):
            raise ValueError(f"steering value must be a number, got {self.value!r}") from None
        if not math.isfinite(v):
            raise ValueError(f"steering value for feature {self.feature} is {v}: use a finite "
                             f"number (e.g. a multiple of the feature's max activation)")
        if abs(v) > MAX_STEER:
            raise ValueError(f"steering value {v:g} for feature {self.feature} is outside the documented range "
                             f"-{MAX_STEER:.0f}..{MAX_STEER:.0f} (a feature's activations are in the tens): use a "
                             f"smaller multiple of the feature's max activation")
        object.__setattr__(self, "value", v)
        object.__setattr__(self, "feature", int(self.feature))
        if self.positions is not None:
            pos = tuple(int(p) for p in self.positions)
            if any(p < 0 for p in pos):
                raise ValueError(f"positions must be >= 0 (0 is the start-of-text token), got {pos}")
            object.__setattr__(self, "positions", pos)


def check_interventions(sae, interventions) -> tuple[Intervention, ...]:
    ivs = tuple(interventions or ())
    d_sae = int(sae.cfg.d_sae) if sae is not None else 0
    for iv in ivs:
        if not isinstance(iv, Intervention):
            raise TypeError(f"expected Intervention objects, got {type(iv).__name__}")
        if sae is None:
            raise ValueError("interventions need an SAE: pass sae=...")
        if not 0 <= iv.feature < d_sae:
            raise ValueError(f"feature index {iv.feature} is out of range: this SAE has {d_sae} "
                             f"features, pick one in 0..{d_sae - 1}")
    return ivs


def _dec_rows(sae, feats: list[int]) -> torch.Tensor:
    """Rows of ``W_dec_raw`` for ``feats`` without materialising the whole raw dictionary."""
    if hasattr(sae, "W_dec") and hasattr(sae, "input_scale") and torch.is_tensor(getattr(sae, "W_dec")):
        return sae.W_dec[feats] / sae.input_scale
    return sae.W_dec_raw[feats]


def _encode_some(sae, x: torch.Tensor, feats: list[int]) -> torch.Tensor | None:
    """f[..., feats] of a ReLU SparseAutoencoder without the full encoder (None if not possible)."""
    cfg = sae.cfg
    if getattr(cfg, "architecture", None) != "relu" or not all(
            torch.is_tensor(getattr(sae, a, None)) for a in ("W_enc", "b_enc", "b_dec", "input_scale")):
        return None
    if not torch.isfinite(x).all():
        raise ValueError("MLP activations contain NaN/Inf: check the model weights")
    xs = x.to(sae.W_enc.dtype) * sae.input_scale
    xc = xs - sae.b_dec if getattr(cfg, "pre_encoder_bias", True) else xs   # the 2024 recipe: no pre-encoder bias
    return torch.relu(xc @ sae.W_enc[:, feats] + sae.b_enc[feats])


def edit_acts(x: torch.Tensor, sae, interventions, keep_error: bool = True,
              start_pos: int = 0, track: list[int] | None = None, dirs: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply interventions to MLP activations ``x`` [batch, pos, d_mlp].

    ``start_pos`` is the absolute position of ``x[:, 0]``. Returns the edited activations and
    the feature activations before the edit (``None`` when there is no SAE): all of them, or
    with ``track`` (a list of features) only those columns. ``dirs`` optionally holds the
    decoder rows of the intervened features (sorted by feature), to skip recomputing them.
    """
    if sae is None:
        return x, None
    feats = sorted({iv.feature for iv in interventions})
    f = None
    if track is not None and keep_error:
        cols = list(dict.fromkeys(list(track) + feats))
        sub = _encode_some(sae, x, cols)
        if sub is not None:
            out_f = sub[..., :len(track)]
            if not interventions:
                return x, out_f
            fi = sub[..., [cols.index(c) for c in feats]]
            col_of = {c: k for k, c in enumerate(feats)}
            return _apply(x, fi, col_of, interventions, start_pos, keep_error, sae, feats, dirs), out_f
    f = sae.encode(x)
    out_f = f if track is None else f[..., list(track)]
    if not interventions:
        return x, out_f
    return _apply(x, f, None, interventions, start_pos, keep_error, sae, feats, dirs), out_f


def _apply(x, f, col_of, interventions, start_pos, keep_error, sae, feats, dirs):
    n = x.shape[1]
    abs_pos = torch.arange(start_pos, start_pos + n)
    f_new = f.clone()
    touched = torch.zeros(n, dtype=torch.bool)
    for iv in interventions:
        mask = torch.ones(n, dtype=torch.bool) if iv.positions is None else \
            torch.isin(abs_pos, torch.tensor(iv.positions, dtype=torch.long))
        if not mask.any():
            continue
        touched |= mask
        j = iv.feature if col_of is None else col_of[iv.feature]
        col = f_new[..., j]
        if iv.mode == "clamp":
            new = torch.full_like(col, iv.value)
        elif iv.mode == "add":
            new = col + iv.value
        else:
            new = torch.zeros_like(col)
        f_new[..., j] = torch.where(mask, new, col)
    if not touched.any():
        return x
    if keep_error:
        idx = feats if col_of is None else [col_of[c] for c in feats]
        d = dirs if dirs is not None else _dec_rows(sae, feats)
        return x + (f_new[..., idx] - f[..., idx]) @ d.to(x.dtype)
    rec = sae.decode(f_new).to(x.dtype)
    return torch.where(touched[None, :, None], rec, x)


def steering_hooks(sae, interventions, keep_error: bool = True, record: list | None = None,
                   track: list[int] | None = None):
    """``[(hook_name, fn)]`` for ``model.run_with_hooks`` / ``model.hooks``; positions are absolute."""
    ivs = check_interventions(sae, interventions)

    def fn(act, hook):
        new, f = edit_acts(act, sae, ivs, keep_error, track=track)
        if record is not None and f is not None:
            record.append(f.detach())
        return new
    return [(HOOK_MLP_POST, fn)]


@contextlib.contextmanager
def steered(model, sae, interventions, keep_error: bool = True, record: list | None = None,
            track: list[int] | None = None):
    """Context in which ``model(...)`` runs with the interventions; hooks removed on exit or error.

    ``record`` (a list) receives the pre-edit feature activations of each forward pass
    (only the ``track`` columns if given)."""
    with model.hooks(fwd_hooks=steering_hooks(sae, interventions, keep_error, record, track)):
        yield model


# ---------------------------------------------------------------- fast forward (KV cache)
class FastLM:
    """The one-layer (or n-layer) transformer run from its own weights with a key/value cache.

    Reads the live parameters of a ``build_model`` TransformerBridge (no copies), so it always
    agrees with the model; ``check()`` compares its logits with ``model(tokens)``.
    """

    def __init__(self, model):
        self.model = model
        raw = {k.replace("_original_component.", ""): v for k, v in model.named_parameters()}
        cfg = model.cfg
        if (getattr(cfg, "positional_embedding_type", "standard") or "standard") != "standard" \
                or str(cfg.normalization_type).upper() != "LN" or getattr(cfg, "gated_mlp", False) \
                or str(cfg.act_fn).lower() != "relu":
            raise NotImplementedError("FastLM supports the suite's LN / learned-position / ReLU model only")
        try:
            self.W_E, self.W_pos = raw["tok_embed.weight"], raw["pos.weight"]
            self.layers = []
            for i in range(cfg.n_layers):
                p = f"layers.{i}."
                self.layers.append({k: raw[p + k] for k in (
                    "ln1.weight", "ln1.bias", "attn.q.weight", "attn.q.bias", "attn.k.weight",
                    "attn.k.bias", "attn.v.weight", "attn.v.bias", "attn.o.weight", "attn.o.bias",
                    "ln2.weight", "ln2.bias", "mlp.fc_in.weight", "mlp.fc_in.bias",
                    "mlp.fc_out.weight", "mlp.fc_out.bias")})
            self.ln_w, self.ln_b, self.W_head = raw["ln_out.weight"], raw["ln_out.bias"], raw["head.weight"]
        except KeyError as e:
            raise NotImplementedError(f"FastLM does not know this model's layout (missing {e})") from None
        head = model.original_model.head
        b = getattr(head, "bias", None)
        self.b_head = b if isinstance(b, torch.Tensor) else None
        self.n_heads, self.d_head, self.eps = cfg.n_heads, cfg.d_head, cfg.eps
        self.n_ctx = cfg.n_ctx
        self.scale = cfg.attn_scale if cfg.use_attn_scale and cfg.attn_scale > 0 else math.sqrt(cfg.d_head)

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, cache: list | None = None, start_pos: int = 0,
                edit=None):
        """Logits [b, t, V] of new ``tokens`` [b, t] at positions ``start_pos``...

        ``cache`` (a list, filled in place) holds each layer's keys/values of earlier
        positions. ``edit(x, start_pos) -> (x_edited, f)`` rewrites layer 0's MLP
        activations. Returns (logits, f) where f is what ``edit`` returned for layer 0.
        """
        b, t = tokens.shape
        if start_pos + t > self.n_ctx:
            raise ValueError(f"{start_pos + t} positions exceed the context of {self.n_ctx}")
        h = self.W_E[tokens] + self.W_pos[start_pos:start_pos + t]
        feats = None
        if cache is not None and not cache:
            cache.extend([None] * len(self.layers))
        for i, L in enumerate(self.layers):
            z = F.layer_norm(h, h.shape[-1:], L["ln1.weight"], L["ln1.bias"], self.eps)
            q = F.linear(z, L["attn.q.weight"], L["attn.q.bias"]).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
            k = F.linear(z, L["attn.k.weight"], L["attn.k.bias"]).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
            v = F.linear(z, L["attn.v.weight"], L["attn.v.bias"]).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
            if cache is not None:
                if cache[i] is not None:
                    k = torch.cat([cache[i][0], k], 2)
                    v = torch.cat([cache[i][1], v], 2)
                cache[i] = (k, v)
            T = k.shape[2]
            scores = torch.matmul(q, k.transpose(-2, -1)) / self.scale
            if t > 1:
                qpos = torch.arange(T - t, T)[:, None]
                scores = scores.masked_fill(torch.arange(T)[None, :] > qpos, float("-inf"))
            attn = torch.matmul(F.softmax(scores, -1), v).transpose(1, 2).reshape(b, t, -1)
            h = h + F.linear(attn, L["attn.o.weight"], L["attn.o.bias"])
            z = F.layer_norm(h, h.shape[-1:], L["ln2.weight"], L["ln2.bias"], self.eps)
            act = F.relu(F.linear(z, L["mlp.fc_in.weight"], L["mlp.fc_in.bias"]))
            if i == 0 and edit is not None:
                act, feats = edit(act, start_pos)
            h = h + F.linear(act, L["mlp.fc_out.weight"], L["mlp.fc_out.bias"])
        z = F.layer_norm(h, h.shape[-1:], self.ln_w, self.ln_b, self.eps)
        return F.linear(z, self.W_head, self.b_head), feats

    @torch.no_grad()
    def check(self, tokens: torch.Tensor | None = None, atol: float = 1e-4) -> float:
        """Largest |logit difference| from the TransformerLens forward; raises if above ``atol``."""
        if tokens is None:
            g = torch.Generator().manual_seed(0)
            tokens = torch.randint(0, self.W_E.shape[0], (1, min(12, self.n_ctx)), generator=g)
        ref = self.model(tokens).float()
        ours, _ = self.forward(tokens)
        cache: list = []
        a, _ = self.forward(tokens[:, :-1], cache)
        c, _ = self.forward(tokens[:, -1:], cache, start_pos=tokens.shape[1] - 1)
        err = max(float((ref - ours).abs().max()), float((ref[:, -1] - c[:, -1]).abs().max()))
        if err > atol * max(1.0, float(ref.abs().max())):
            raise RuntimeError(f"FastLM disagrees with the model by {err:.2e}: use backend='hooks'")
        return err


# ---------------------------------------------------------------- sampling
@contextlib.contextmanager
def one_thread(n: int | None = 1):
    """Run with ``n`` torch threads (None: leave as is), restoring the count afterwards."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(old)


def check_temperature(temperature) -> float:
    """0 (greedy) or MIN_TEMPERATURE..MAX_TEMPERATURE; anything else is a ValueError saying so."""
    t = float(temperature)
    if t < 0:
        raise ValueError(f"temperature {t} is negative: use 0 for greedy decoding or a positive value (e.g. 0.8)")
    if 0 < t < MIN_TEMPERATURE:
        raise ValueError(f"temperature {temperature:g} is too small (it overflows the softmax): use 0 for greedy "
                         f"decoding or a value from {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}")
    if t > MAX_TEMPERATURE:
        raise ValueError(f"temperature {t:g} is too large (the text would be noise): use at most {MAX_TEMPERATURE:g}")
    return t


def _kind(v) -> str:
    return f"{v!r} (a {type(v).__name__})"


def check_sampling(top_k, top_p) -> tuple[int | None, float | None]:
    """``(top_k, top_p)`` checked: top_k a whole number >= 0 (0 or None: off), top_p a number in
    MIN_TOP_P..1 (None: off). A bool, a string or a fraction is refused with the fix, never
    handed to torch (whose errors name neither the argument nor the fix)."""
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Real) or (
                not isinstance(top_k, numbers.Integral) and not float(top_k).is_integer()):
            hint = f": pass {top_k.strip()} without quotes" if isinstance(top_k, str) and top_k.strip().isdigit() else ""
            raise ValueError(f"top_k must be a whole number of tokens (0 or None: off, e.g. 40), got {_kind(top_k)}{hint}")
        top_k = int(top_k)
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 or None: off), got {top_k}")
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real):
            raise ValueError(f"top_p must be a number in (0, 1] (None: off, e.g. 0.9), got {_kind(top_p)}")
        top_p = float(top_p)
        if not math.isfinite(top_p):
            raise ValueError(f"top_p is {top_p}: use a finite number")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_p < MIN_TOP_P:
            raise ValueError(f"top_p {top_p:g} is too small (it keeps only the likeliest token, and float32 rounds it "
                             f"to 0): use at least {MIN_TOP_P:g}, or temperature=0 for greedy decoding")
    return top_k, top_p


def check_logits(logits: torch.Tensor, step: int) -> torch.Tensor:
    """The next-token logits, or a ValueError when they are not finite (both backends call this)."""
    if not torch.isfinite(logits).all():
        raise ValueError(f"the steered model's next-token logits are not finite (NaN or Inf) at new token {step + 1}: "
                         f"the interventions push the activations too far; use smaller values")
    return logits


def pick_token(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
               g: torch.Generator) -> int:
    """One next token from logits [V], exactly as ``mono_utils.model.sample`` does (plus top-p)."""
    logits = logits.float()
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k:
        v, _ = logits.topk(min(top_k, logits.numel()))
        logits[logits < v[-1]] = -float("inf")
    if top_p is not None and top_p < 1.0:
        probs = F.softmax(logits, -1)
        sp, si = probs.sort(descending=True)
        drop = (sp.cumsum(0) - sp) >= top_p     # keep the smallest prefix reaching top_p
        drop[0] = False                          # and always the likeliest token
        logits[si[drop]] = -float("inf")
    return int(torch.multinomial(F.softmax(logits, -1), 1, generator=g))


@dataclass
class Generation:
    prompt_ids: list[int]          # BOS + prompt (after truncation)
    new_ids: list[int]
    text: str                      # the continuation
    str_tokens: list[str]          # of prompt_ids + new_ids
    feature_acts: np.ndarray | None  # [len(prompt_ids)+len(new_ids)-1, n_tracked] before the edit
    tracked: list[int]
    first_logits: torch.Tensor     # next-token logits after the prompt [V]
    notes: list[str] = field(default_factory=list)


def prepare_prompt(tokenizer, prompt, n_ctx: int, max_new_tokens: int,
                   allow_empty: bool = False) -> tuple[list[int], list[str]]:
    """BOS + the prompt's tokens, truncated (from the left) so that prompt + new tokens fit."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if max_new_tokens > n_ctx - 2:
        raise ValueError(f"max_new_tokens {max_new_tokens} does not fit the context of {n_ctx} tokens "
                         f"(with the start token and one prompt token): use at most {n_ctx - 2}")
    if not prompt and not allow_empty:
        raise ValueError("the prompt is empty: type some text (the paper uses '1,2,3,4,5,6,7,8,9,10'), "
                         "or pass allow_empty=True to sample from the start-of-text token alone")
    bos = tokenizer.convert_tokens_to_ids(EOT)
    ids = encode(tokenizer, prompt) if prompt else []
    notes = []
    room = n_ctx - 1 - max_new_tokens
    if len(ids) > room:
        notes.append(f"prompt of {len(ids)} tokens truncated to its last {room} so that it and "
                     f"{max_new_tokens} new tokens fit the {n_ctx}-token context")
        ids = ids[len(ids) - room:]
    if "\ufffd" in prompt or any(ord(c) > 0xFFFF for c in prompt):
        notes.append("the prompt has characters outside the training text's usual range: they are "
                     "encoded byte by byte")
    return [bos] + list(ids), notes


@torch.no_grad()
def generate(model, tokenizer, sae, prompt: str, interventions=(), *, max_new_tokens: int = 40,
             temperature: float = 0.8, top_k: int | None = 40, top_p: float | None = None,
             seed: int = 0, keep_error: bool = True, track=None, backend: str = "fast",
             fast: FastLM | None = None, allow_empty: bool = False, threads: int | None = 1) -> Generation:
    """Sample ``max_new_tokens`` after ``prompt`` with the interventions applied.

    Defaults match ``mono_utils.model.sample`` (temperature 0.8, top-k 40): with no
    intervention and the same seed the text is the same. ``temperature=0`` is greedy.
    ``track`` lists features whose (pre-edit) activations are returned per position
    (default: the intervened ones). ``threads`` (default 1: single-token steps are too small
    to gain from more, and a second thread only adds synchronisation) is restored afterwards.
    """
    if backend not in ("fast", "hooks"):
        raise ValueError(f"backend must be 'fast' or 'hooks', got {backend!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ValueError(f"temperature must be a number (0: greedy, e.g. 0.8), got {_kind(temperature)}")
    if not math.isfinite(float(temperature)):
        raise ValueError(f"temperature is {temperature}: use a finite number")
    check_temperature(temperature)
    top_k, top_p = check_sampling(top_k, top_p)
    ivs = check_interventions(sae, interventions)
    n_ctx = model.cfg.n_ctx
    ids, notes = prepare_prompt(tokenizer, prompt, n_ctx, max_new_tokens, allow_empty)
    tracked = list(dict.fromkeys(track if track is not None else [iv.feature for iv in ivs]))
    if sae is not None:
        bad = [t for t in tracked if not 0 <= int(t) < sae.cfg.d_sae]
        if bad:
            raise ValueError(f"tracked feature {bad[0]} is out of range 0..{sae.cfg.d_sae - 1}")
    else:
        tracked = []
    g = torch.Generator().manual_seed(int(seed))
    rec: list[torch.Tensor] = []
    n_prompt = len(ids)
    first = None
    with one_thread(threads):
        if backend == "fast":
            fast = fast or FastLM(model)
            feats = sorted({iv.feature for iv in ivs})
            dirs = _dec_rows(sae, feats) if feats and keep_error else None

            def edit(x, start):
                return edit_acts(x, sae, ivs, keep_error, start, track=tracked, dirs=dirs)

            use = edit if (sae is not None and (ivs or tracked)) else None
            cache: list = []
            logits, f = fast.forward(torch.tensor([ids]), cache, 0, use)
            for step in range(max_new_tokens):
                if f is not None and tracked:
                    rec.append(f[0].float())
                last = check_logits(logits[0, -1], step)
                if first is None:
                    first = last.clone()
                nxt = pick_token(last, temperature, top_k, top_p, g)
                ids.append(nxt)
                if step == max_new_tokens - 1:
                    break
                logits, f = fast.forward(torch.tensor([[nxt]]), cache, len(ids) - 1, use)
        else:
            record: list = []
            with steered(model, sae, ivs, keep_error, record, track=tracked):
                for step in range(max_new_tokens):
                    record.clear()
                    logits = model(torch.tensor([ids]))
                    last = check_logits(logits[0, -1].float(), step)
                    if record and tracked:
                        rec.append(record[-1][0, (0 if first is None else -1):].float())
                    if first is None:
                        first = last.clone()
                    ids.append(pick_token(last, temperature, top_k, top_p, g))
    new = ids[n_prompt:]
    acts = torch.cat(rec).numpy() if rec else None
    return Generation(ids[:n_prompt], new, readable_text(tokenizer, new), str_tokens(tokenizer, ids),
                      acts, tracked, first, notes)


def next_token_shift(base_logits: torch.Tensor, steered_logits: torch.Tensor, tokenizer,
                     k: int = 10) -> dict:
    """Top ``k`` tokens whose next-token probability rose and fell most under the intervention."""
    p0 = F.softmax(base_logits.float(), -1)
    p1 = F.softmax(steered_logits.float(), -1)
    d = p1 - p0
    k = max(1, min(k, d.numel() // 2))
    up = d.topk(k).indices.tolist()
    down = (-d).topk(k).indices.tolist()
    names = readable_each(tokenizer, up + down)   # a split byte as ‹d7›, as the atlas shows it, not "�"

    def rows(idx, nm):
        return [{"token": n, "id": i, "p_base": float(p0[i]), "p_steered": float(p1[i]),
                 "delta": float(d[i])} for i, n in zip(idx, nm)]
    return {"up": rows(up, names[:k]), "down": rows(down, names[k:]),
            "kl": float((p1 * (p1.clamp_min(1e-12).log() - p0.clamp_min(1e-12).log())).sum())}
