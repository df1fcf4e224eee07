"""The upstream ``ptycho_torch`` API that Ptychodus 1.7.0's ``PtychoPINN-Torch`` reconstructors call.

A thin adapter: ``base_api`` turns the API's configs into a factory payload (``config_factory``) and runs the shared
training and inference workflows through the backend registry; ``checkpoint`` puts the configs into the Lightning
checkpoints that training writes and reads them back. docs/workflows/ptychodus.md describes the route.
"""
