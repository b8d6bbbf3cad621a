"""The feature atlas: every feature and neuron of a build as a static, offline web site.

``python -m mono_utils atlas --preset default --out atlas/`` (see :mod:`mono_utils.atlas.site`).
"""
