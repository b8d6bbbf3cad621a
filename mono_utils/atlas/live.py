"""The live atlas: the models and their dictionaries as ONNX, run in the page by onnxruntime-web.

The static atlas shows what the build measured; the live part lets a student type a sentence
and see which units fire, or steer a feature, with nothing but a browser and the folder.

What is exported (``export_onnx``), from the trained artifacts, with torch's ONNX exporter:

- model A in two graphs split at ``blocks.0.mlp.hook_post`` so that the page can edit the MLP
  activations between them, as notebook 06's steering hook does:
  ``front``: tokens [1, T] -> ``resid_mid`` [1, T, d_model] (the residual stream after attention)
  and ``mlp_post`` [1, T, d_mlp] (the hook's activations);
  ``back``: (``resid_mid``, ``mlp_post``) -> ``logits`` [1, T, d_vocab].
  ``back(front(tokens))`` is the model's forward pass.
- model B the same way (``live/model-B-*``) where the atlas holds a set of model B;
- each SAE of a unit set, on its own model's activations: ``encode``: x [N, d_mlp] -> f [N, d_sae] and ``decode``:
  f -> (``x_hat``, ``dirs`` = f @ W_dec_raw, the reconstruction without the decoder bias; with a
  one-hot f that is exactly one dictionary vector, which the page's steering edit needs).

The page needs the model cut at ``hook_post``, with the activations as an output of one graph and
an input of the next; TransformerLens's TransformerBridge exports (``export_bridge``: tokens ->
logits, torch's TorchScript-based exporter) but only whole, with no such cut. ``SplitLM`` rebuilds
the same computation in plain torch from the bridge's own parameters (the layout
``steering.interventions.FastLM`` reads); ``check_split`` and the tests prove it equal to the bridge,
and its ONNX graphs equal to the bridge's own ONNX export (logits and ``hook_post`` within 1e-4).

In the folder (``write_live``), everything is a classic ``<script>`` (Chromium refuses ``fetch()``
and module scripts on ``file://``): ``live/*.js`` files hand base64 bytes or JSON to
``ATLAS.put``; onnxruntime-web's single-threaded wasm runtime is given its ``.wasm`` as bytes
(``env.wasm.wasmBinary``, stored gzipped and inflated by the browser) and its loader module as a ``data:`` URL (``env.wasm.wasmPaths.mjs``),
so it fetches nothing; the tokenizer is ``@huggingface/tokenizers`` reading the tokenizer's own
``tokenizer.json``. Both libraries are pinned in ``mono_utils/atlas/js/package-lock.json`` and
installed by ``make atlas-js`` (``npm ci``).
"""
from __future__ import annotations

import base64
import gzip
import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.model import model_config_of
from ..core.sae import SparseAutoencoder
from ..core.tokenizer import EOT
from ..pipeline.models import get_model
from ..pipeline.saes import get_paper_sae, get_sae, get_sae_family, get_topk_sae
from ..steering.interventions import FastLM

LIVE_VERSION = 1
JS_DIR = Path(__file__).resolve().parent / "js"                 # package.json + package-lock.json
NODE_MODULES = JS_DIR / "node_modules"
ASSETS = Path(__file__).resolve().parent / "assets"
ORT_DIST = NODE_MODULES / "onnxruntime-web" / "dist"
ORT_FILES = {"js": "ort.wasm.min.js", "mjs": "ort-wasm-simd-threaded.mjs", "wasm": "ort-wasm-simd-threaded.wasm"}
TOKENIZERS_CJS = NODE_MODULES / "@huggingface" / "tokenizers" / "dist" / "tokenizers.min.cjs"
OPSET = 17
INSTALL_HINT = ("install the page's JavaScript libraries with `make atlas-js` (npm ci in mono_utils/atlas/js), "
                "or write the static atlas alone with --no-live")


# ---------------------------------------------------------------- the model, split at hook_post
class SplitLM(nn.Module):
    """Model A's forward pass in plain torch, from the bridge's parameters, split at layer 0's MLP."""

    def __init__(self, model):
        super().__init__()
        fast = FastLM(model)            # knows the bridge's parameter layout; refuses other models
        c = model_config_of(model)
        self.n_heads, self.d_head, self.eps, self.scale = fast.n_heads, fast.d_head, fast.eps, fast.scale
        self.n_ctx = c.n_ctx
        self.norm_shape = (c.d_model,)   # a constant: the exporter cannot take a traced shape here
        own = lambda t: nn.Parameter(t.detach().clone().float(), requires_grad=False)  # noqa: E731
        self.W_E, self.W_pos = own(fast.W_E), own(fast.W_pos)
        self.layers = nn.ModuleList()
        for L in fast.layers:
            m = nn.Module()
            for k, v in L.items():
                setattr(m, k.replace(".", "_"), own(v))
            self.layers.append(m)
        self.ln_w, self.ln_b, self.W_head = own(fast.ln_w), own(fast.ln_b), own(fast.W_head)
        self.b_head = own(fast.b_head) if fast.b_head is not None else None
        self.register_buffer("future", torch.triu(torch.ones(c.n_ctx, c.n_ctx, dtype=torch.bool), 1))

    def _attn(self, L, h):
        b, t, _ = h.shape
        z = F.layer_norm(h, self.norm_shape, L.ln1_weight, L.ln1_bias, self.eps)
        q = F.linear(z, L.attn_q_weight, L.attn_q_bias).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        k = F.linear(z, L.attn_k_weight, L.attn_k_bias).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        v = F.linear(z, L.attn_v_weight, L.attn_v_bias).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) / self.scale
        scores = scores.masked_fill(self.future[:t, :t], float("-inf"))
        a = torch.matmul(F.softmax(scores, -1), v).transpose(1, 2).reshape(b, t, -1)
        return h + F.linear(a, L.attn_o_weight, L.attn_o_bias)

    def _mlp_in(self, L, h):
        z = F.layer_norm(h, self.norm_shape, L.ln2_weight, L.ln2_bias, self.eps)
        return F.relu(F.linear(z, L.mlp_fc_in_weight, L.mlp_fc_in_bias))

    def front(self, tokens):
        t = tokens.shape[1]
        h = self.W_E[tokens] + self.W_pos[:t]
        h = self._attn(self.layers[0], h)
        return h, self._mlp_in(self.layers[0], h)

    def back(self, resid_mid, mlp_post):
        h = resid_mid + F.linear(mlp_post, self.layers[0].mlp_fc_out_weight, self.layers[0].mlp_fc_out_bias)
        for L in list(self.layers)[1:]:
            h = self._attn(L, h)
            h = h + F.linear(self._mlp_in(L, h), L.mlp_fc_out_weight, L.mlp_fc_out_bias)
        z = F.layer_norm(h, self.norm_shape, self.ln_w, self.ln_b, self.eps)
        return F.linear(z, self.W_head, self.b_head)

    def forward(self, tokens):
        h, act = self.front(tokens)
        return self.back(h, act), act


class _Front(nn.Module):
    def __init__(self, lm: SplitLM):
        super().__init__()
        self.lm = lm

    def forward(self, tokens):
        return self.lm.front(tokens)


class _Back(nn.Module):
    def __init__(self, lm: SplitLM):
        super().__init__()
        self.lm = lm

    def forward(self, resid_mid, mlp_post):
        return self.lm.back(resid_mid, mlp_post)


class SAEEncode(nn.Module):
    """x [N, d_in] (raw MLP activations) -> f [N, d_sae]: ``SparseAutoencoder.encode`` without its
    input checks (data-dependent Python branches that an exported graph cannot hold)."""

    def __init__(self, sae: SparseAutoencoder):
        super().__init__()
        self.sae = sae

    def forward(self, x):
        return self.sae.encode_scaled(x * self.sae.input_scale)


class SAEDecode(nn.Module):
    """f [N, d_sae] -> (x_hat [N, d_in], dirs = f @ W_dec_raw [N, d_in])."""

    def __init__(self, sae: SparseAutoencoder):
        super().__init__()
        self.sae = sae

    def forward(self, f):
        return self.sae.decode(f), (f @ self.sae.W_dec) / self.sae.input_scale


def _export(module: nn.Module, args: tuple, inputs: list[str], outputs: list[str], dynamic: dict) -> bytes:
    """One graph as ONNX bytes (torch's TorchScript-based exporter: it handles the dynamic token axis
    of this small graph without onnxscript, which the suite does not install)."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")   # the exporter's deprecation notice, once per graph
        torch.onnx.export(module.eval(), args, buf, input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    return buf.getvalue()


def export_model(model) -> dict[str, bytes]:
    """``{"front": onnx bytes, "back": onnx bytes}`` of a ``build_model`` model (see the module docstring)."""
    lm = SplitLM(model).eval()
    c = model_config_of(model)
    tok = torch.zeros(1, min(8, c.n_ctx), dtype=torch.long)
    with torch.no_grad():
        h, act = lm.front(tok)
    return {"front": _export(_Front(lm), (tok,), ["tokens"], ["resid_mid", "mlp_post"],
                             {"tokens": {1: "T"}, "resid_mid": {1: "T"}, "mlp_post": {1: "T"}}),
            "back": _export(_Back(lm), (h, act), ["resid_mid", "mlp_post"], ["logits"],
                            {"resid_mid": {1: "T"}, "mlp_post": {1: "T"}, "logits": {1: "T"}})}


def export_bridge(model) -> bytes:
    """The TransformerBridge itself as ONNX (tokens [1, T] -> logits): the reference the split graphs are
    checked against (the page does not ship it: it cannot edit the MLP activations)."""
    c = model_config_of(model)
    return _export(model, (torch.zeros(1, min(8, c.n_ctx), dtype=torch.long),), ["tokens"], ["logits"],
                   {"tokens": {1: "T"}, "logits": {1: "T"}})


def export_sae(sae: SparseAutoencoder) -> dict[str, bytes]:
    """``{"encode": onnx bytes, "decode": onnx bytes}`` of an SAE (see the module docstring)."""
    d_in, d_sae = sae.cfg.d_in, sae.cfg.d_sae
    x = torch.zeros(3, d_in)
    f = torch.zeros(3, d_sae)
    return {"encode": _export(SAEEncode(sae), (x,), ["x"], ["f"], {"x": {0: "N"}, "f": {0: "N"}}),
            "decode": _export(SAEDecode(sae), (f,), ["f"], ["x_hat", "dirs"],
                              {"f": {0: "N"}, "x_hat": {0: "N"}, "dirs": {0: "N"}})}


@torch.no_grad()
def check_split(model, tokens: torch.Tensor, atol: float = 1e-4) -> float:
    """Largest |difference| between ``SplitLM`` and the bridge (logits and hook_post); raises above ``atol``."""
    from ..core.model import mlp_post   # the suite's one way to read the hook
    lm = SplitLM(model).eval()
    logits, act = lm(tokens)
    err = max(float((logits - model(tokens).float()).abs().max()), float((act - mlp_post(model, tokens)).abs().max()))
    if err > atol:
        raise RuntimeError(f"the exported model's plain-torch copy differs from the bridge by {err:.2e} "
                           f"(above {atol:g}): the bridge's layout changed; do not ship this live model")
    return err


# ---------------------------------------------------------------- onnxruntime (Python side, for checks)
def ort_session(onnx_bytes: bytes):
    import onnxruntime as ort   # lazy: only the checks and tests run ONNX in Python
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


def run_model_onnx(graphs: dict[str, bytes], tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, mlp_post) of ``tokens`` [1, T] through the exported front and back graphs."""
    tok = np.asarray(tokens, dtype=np.int64)
    h, act = ort_session(graphs["front"]).run(None, {"tokens": tok})
    (logits,) = ort_session(graphs["back"]).run(None, {"resid_mid": h, "mlp_post": act})
    return logits, act


# ---------------------------------------------------------------- writing the folder
def _b64_js(key: str, data: bytes) -> str:
    return "ATLAS.put(" + json.dumps(key) + ",\"" + base64.b64encode(data).decode("ascii") + "\");\n"


def _json_js(key: str, obj) -> str:
    return "ATLAS.put(" + json.dumps(key) + "," + json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + ");\n"


def check_libraries() -> None:
    """Raise with the fix when the pinned JavaScript libraries are not installed."""
    need = [ORT_DIST / f for f in ORT_FILES.values()] + [TOKENIZERS_CJS]
    missing = [p.name for p in need if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the live atlas needs {', '.join(missing)} under {JS_DIR}: {INSTALL_HINT}")


def _npm_version(name: str) -> str | None:
    p = NODE_MODULES / name / "package.json"
    return json.loads(p.read_text()).get("version") if p.is_file() else None


def tokenizer_files(tokenizer) -> tuple[dict, dict]:
    """The tokenizer's own ``tokenizer.json`` and ``tokenizer_config.json`` (parsed)."""
    folder = Path(getattr(tokenizer, "name_or_path", "") or "")
    tj = folder / "tokenizer.json"
    if not tj.is_file():
        raise FileNotFoundError(f"the tokenizer's folder {folder} has no tokenizer.json: load the tokenizer with "
                                f"pipeline.get_tokenizer (the page tokenizes with that very file)")
    tc = folder / "tokenizer_config.json"
    return json.loads(tj.read_text(encoding="utf-8")), (json.loads(tc.read_text(encoding="utf-8")) if tc.is_file() else {})


def write_live(folder: str | Path, models, tokenizer, saes: dict[str, SparseAutoencoder], n_units: dict[str, int],
               labels: dict[str, str], neuron_sets: tuple[str, ...] = (), set_models: dict[str, str] | None = None) -> dict:
    """Write ``<folder>/live/`` (runtime, tokenizer, ONNX graphs as scripts) and hook it into the page.

    ``models``: ``{"A": model, "B": model}`` (or model A alone); ``saes``: unit set key -> its SAE;
    ``neuron_sets``: keys of sets that are a model's neurons (shown from ``mlp_post`` directly);
    ``set_models``: set key -> the model it reads (default ``"A"``). Model A's graphs are
    ``live/model-{front,back}.js``, another model W's ``live/model-W-{front,back}.js``, loaded by the page
    the first time a set of W is shown. Returns a report (bytes per file)."""
    models = models if isinstance(models, dict) else {"A": models}
    set_models = dict(set_models or {})
    if "A" not in models:
        raise ValueError("write_live needs model A (the page starts on it): pass models={'A': model, ...}")
    missing = sorted({set_models.get(k, "A") for k in (*saes, *neuron_sets)} - set(models))
    if missing:
        raise ValueError(f"unit sets read model(s) {missing} that write_live was not given: pass them in models")
    model = models["A"]
    check_libraries()
    folder = Path(folder)
    live = folder / "live"
    live.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, int] = {}

    def put(name: str, text: str) -> None:
        data = text.encode("utf-8")
        (live / name).write_bytes(data)
        sizes[name] = len(data)

    # runtime: the UMD build (a classic script: module scripts are refused on file://), its loader
    # module as a data: URL and its wasm as bytes, so it fetches nothing
    shutil.copyfile(ORT_DIST / ORT_FILES["js"], live / "ort.js")
    sizes["ort.js"] = (live / "ort.js").stat().st_size
    # the wasm gzipped (15 MB -> 3.8 MB; the page inflates it with the browser's DecompressionStream)
    put("ort-wasm.js", _b64_js("live/ort-mjs", (ORT_DIST / ORT_FILES["mjs"]).read_bytes()) +
        _b64_js("live/ort-wasm-gz", gzip.compress((ORT_DIST / ORT_FILES["wasm"]).read_bytes(), 9, mtime=0)))
    # the tokenizer library: its CommonJS build run as a classic script with a local module object
    put("tokenizers.js", "(function(){var module={exports:{}};var exports=module.exports;\n" +
        TOKENIZERS_CJS.read_text(encoding="utf-8") + "\n;window.HFTokenizers=module.exports;})();\n")
    tj, tc = tokenizer_files(tokenizer)
    put("tokenizer.js", _json_js("live/tokenizer", {"json": tj, "config": tc}))
    c = model_config_of(model)
    prefixes = {}
    for w, m in models.items():
        cw = model_config_of(m)
        if (cw.n_ctx, cw.d_mlp, cw.d_vocab, cw.n_layers) != (c.n_ctx, c.d_mlp, c.d_vocab, c.n_layers):
            raise ValueError(f"model {w} has another shape than model A (n_ctx, d_mlp, d_vocab, n_layers): "
                             f"the page shares one tokenizer and one panel; write it in an atlas of its own")
        prefixes[w] = "live/model" if w == "A" else f"live/model-{w}"
        for part, data in export_model(m).items():
            name = prefixes[w].removeprefix("live/")
            put(f"{name}-{part}.js", _b64_js(f"{prefixes[w]}-{part}", data))
    sets = {}
    for key, sae in saes.items():
        g = export_sae(sae)
        for part, data in g.items():
            put(f"sae-{key}-{part}.js", _b64_js(f"live/sae-{key}-{part}", data))
        sets[key] = {"kind": "feature", "d_sae": int(sae.cfg.d_sae), "label": labels.get(key, key),
                     "n_units": int(n_units.get(key, sae.cfg.d_sae)), "model": set_models.get(key, "A")}
    for key in neuron_sets:
        sets[key] = {"kind": "neuron", "d_sae": int(c.d_mlp), "label": labels.get(key, key),
                     "n_units": int(c.d_mlp), "model": set_models.get(key, "A")}
    meta = {"version": LIVE_VERSION, "models": prefixes, "n_ctx": int(c.n_ctx), "d_mlp": int(c.d_mlp), "d_vocab": int(c.d_vocab),
            "n_layers": int(c.n_layers),
            "bos": int(tokenizer.convert_tokens_to_ids(EOT)), "sets": sets, "max_new": 40,
            "libraries": {"onnxruntime-web": _npm_version("onnxruntime-web"),
                          "@huggingface/tokenizers": _npm_version("@huggingface/tokenizers")}}
    put("meta.js", _json_js("live/meta", meta))
    shutil.copyfile(ASSETS / "live.js", live / "live.js")
    sizes["live.js"] = (live / "live.js").stat().st_size
    _hook_page(folder / "index.html")
    return {"bytes": sizes, "total": sum(sizes.values()), "sets": sorted(sets)}


SCRIPT_TAG = '<script src="live/live.js" charset="utf-8"></script>\n'


def _hook_page(index_html: Path) -> None:
    """Load ``live/live.js`` before the atlas script (it registers ``ATLAS.live``; the heavy files load later)."""
    html = index_html.read_text(encoding="utf-8")
    if SCRIPT_TAG in html:
        return
    anchor = '<script src="assets/atlas.js"'
    if anchor not in html:
        raise ValueError(f"{index_html} has no {anchor!r}: the page changed; update atlas/live.py's _hook_page")
    index_html.write_text(html.replace(anchor, SCRIPT_TAG + anchor, 1), encoding="utf-8")


def write_atlas_live(folder: str | Path, preset, store, tokenizer, sets, loaded: dict) -> dict:
    """``write_live`` for the unit sets of an atlas (``site.load_sets``): every model a set reads (A, and B
    where the atlas holds B/1 or B's neurons), the SAE of every feature set, and the models' neurons."""
    models, saes, labels, n_units, neurons, set_models = {}, {}, {}, {}, [], {}

    def model(w: str):
        if w not in models:
            models[w] = loaded["models"].get(w) or get_model(preset, store, which=w, progress=False)
        return models[w]

    model("A")
    for us in sets:
        sae = None
        if us.kind == "neuron":
            neurons.append(us.key)
        elif us.key in ("A1", "B1"):
            sae = loaded["saes"].get(f"{us.model}/1") or get_sae(preset, store, which=us.model, progress=False)
        elif us.key == "A1paper":
            sae = get_paper_sae(preset, store, which="A", progress=False)
        elif us.key == "A1topk":
            sae = get_topk_sae(preset, store, which="A", progress=False)
        elif us.key.startswith("Af") and us.key[2:].isdigit():
            n = int(us.key[2:])
            sae = get_sae_family(preset, store, which="A", sizes=(n,), progress=False)[n]
        else:
            continue              # a set with no dictionary the page can run (a transcoder's: its input is not hook_post)
        if sae is not None:
            saes[us.key] = sae
        model(us.model)
        labels[us.key], n_units[us.key], set_models[us.key] = us.label, us.n_units, us.model
    return write_live(folder, models, tokenizer, saes, n_units, labels, tuple(neurons), set_models)
