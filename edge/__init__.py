"""The on-gateway sensing code: drivers -> sources -> features -> runtime -> detectors.

Bytes from a sensor become ``Reading``s (``edge.contracts``), windows of readings become
features, a model scores them and a detector turns the score into a ``Detection``.
Nothing here imports ``gateway`` or ``training``.
"""
