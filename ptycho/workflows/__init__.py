"""Workflows: ``components`` (TensorFlow backend, the legacy API Ptychodus calls) and ``backend_selector``."""
