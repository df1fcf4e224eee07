"""Importing ``ptycho``, its config and the backend selector loads neither TensorFlow nor torch (Ptychodus' parent
process and the launcher's login-node validation rely on it); a missing backend is a clear error."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = ("import sys, {mod}; bad = [m for m in ('tensorflow', 'torch', 'keras') if m in sys.modules]; "
         "print(bad); sys.exit(1 if bad else 0)")


@pytest.mark.parametrize("mod", ["ptycho", "ptycho.config.config", "ptycho.workflows.backend_selector",
                                 "ptycho.raw_data", "ptycho.loader", "ptycho.probe", "ptycho.bundle_format",
                                 "ptycho.workflows.components"])
def test_import_does_not_load_a_backend(mod):
    res = subprocess.run([sys.executable, "-c", CHECK.format(mod=mod)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"{mod} imported {res.stdout.strip()}: {res.stderr[-500:]}"


def test_config_pickles_with_n_zero():
    import pickle

    from ptycho.config.config import ModelConfig, TrainingConfig

    cfg = pickle.loads(pickle.dumps(TrainingConfig(model=ModelConfig(N=0))))
    cfg.model.N = 64
    assert cfg.model.N == 64 and cfg.backend == "pytorch"


def test_backend_selector_errors(monkeypatch):
    from ptycho import backends
    from ptycho.config.config import TrainingConfig
    from ptycho.workflows import backend_selector

    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        backend_selector.require_backend("jax")
    real = backends._importable
    monkeypatch.setattr(backends, "_importable", lambda m: m != "torch" and real(m))
    monkeypatch.setattr(backends, "_LOADED", {})
    with pytest.raises(RuntimeError, match="PyTorch backend selected.*pip install -c constraints.txt -e ."):
        backend_selector.run_cdi_example_with_backend(None, None, TrainingConfig(backend="pytorch"))
    with pytest.raises(ValueError, match="TrainingConfig.backend must be one of"):
        TrainingConfig(backend="jax")


def test_update_legacy_dict_runs_before_dispatch(monkeypatch):
    from ptycho import params
    from ptycho.config.config import ModelConfig, TrainingConfig
    from ptycho.simulate import simulate_scan
    from ptycho.workflows import backend_selector

    from ptycho import backends

    seen = {}

    class Fake:
        """A registered backend that records params.cfg when asked to train."""

        name = "tensorflow"

        def train(self, payload, train, test, hooks=None, write_bundle=True):
            seen.update(params.cfg)
            return {"is_global_zero": True}

    monkeypatch.setattr(backends, "require_backend", lambda b: backends.SPECS[b])
    monkeypatch.setattr(backends, "_LOADED", {"tensorflow": Fake()})
    params.cfg.clear()
    scan = simulate_scan(N=64, object_size=64, n_positions=1, seed=0)
    _, _, results = backend_selector.run_cdi_example_with_backend(
        scan, None, TrainingConfig(model=ModelConfig(N=0, gridsize=1), backend="tensorflow", nepochs=3),
        write_bundle=False)
    assert seen["N"] == 64 and seen["nepochs"] == 3 and seen["backend"] == "tensorflow"
    assert results["backend"] == "tensorflow"
