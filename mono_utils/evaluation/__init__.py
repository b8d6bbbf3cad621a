"""Which measures tell real features from random ones (issue 30): every dictionary of the suite behind
one interface (``dictionaries``), the controls beside the randomized-transformer SAE (``controls``: a
frozen random decoder, PCA) and error bars from A/1's recipe at several seeds (``seeds``).

It reads the artifacts of every lesson's package, so it sits above them all (tests/test_layers.py)."""
