"""mono_utils: the helper package behind the monosemanticity-lab notebooks.

Modules (one concern each): presets, artifacts, data, tokenizer, model, activations, sae,
train, metrics, index, dashboards, proxies, rating, autointerp, universality, splitting,
steering, widgets, pipeline (build-or-load everything a notebook needs), bundle, cli.
Imports are lazy so ``import mono_utils`` stays fast.
"""
__version__ = "0.1.0"
