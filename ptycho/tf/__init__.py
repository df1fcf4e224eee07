"""The TensorFlow backend: Keras model (``model``), its physics (``helper``), training loop (``training``),
inference (``inference``), bundles (``bundle``), the legacy data container Ptychodus feeds (``loader``), the legacy
workflow names (``workflows``) and the ``Backend`` the registry resolves (``backend``).

Importing this package imports nothing heavy; TensorFlow is imported by the modules that run it. Everything the two
backends share (configs, data contract, grouping, simulator, stitching, metrics, outputs) lives in ``ptycho``.
"""
