"""What a build made, in one screen: tokens digest, model A and SAE A/1 figures and the device
that trained them. Run it on two machines' stores to compare a GPU build with a CPU one
(``benchmarks/gpu_check.sh`` runs it). It builds nothing: missing artifacts are reported."""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from mono_utils.store.artifacts import ArtifactStore, read_json
from mono_utils.pipeline.presets import get_preset


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name != "metrics.json" and f.suffix != ".json":
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default")
    ap.add_argument("--artifacts", default=None)
    a = ap.parse_args()
    store, p = ArtifactStore(a.artifacts), get_preset(a.preset)
    out = {}
    for kind, prefix in [("tokens", "tokens-"), ("model", f"modelA-{p.name}"), ("sae", f"saeA-{p.sae_main}-relu-{p.name}")]:
        for folder in sorted((store.root / kind).glob(f"{prefix}*")):
            if not (folder / "metrics.json").exists() and kind != "tokens":
                continue
            m = read_json(folder / "metrics.json") if (folder / "metrics.json").exists() else {}
            keep = {k: m.get(k) for k in ("val_loss", "loss", "train_device", "l0", "loss_recovered", "fvu", "kl",
                                          "dead", "dead_frac", "ultralow", "ultralow_cutoff", "train_tokens")
                    if k in m}
            out[folder.name] = {"content_sha256": digest(folder), **keep}
    for kind in ("corpus", "tokenizer", "tokens"):   # file by file: where two machines' builds part
        for folder in sorted(d for d in (store.root / kind).glob(f"*-{p.name}-*") if d.is_dir()):
            out[folder.name + " files"] = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:12]
                                           for f in sorted(folder.iterdir()) if f.is_file()}
    print(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
