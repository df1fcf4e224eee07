"""The backend registry: every canonical backend name resolves lazily to an object that implements the protocol,
and the rules built on a backend's abilities are checked in one place."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ptycho import backends
from ptycho.config.config import BACKENDS, PyTorchExecutionConfig
from ptycho.errors import PtychoInputError


def test_every_backend_resolves_to_the_protocol():
    assert tuple(backends.SPECS) == BACKENDS
    for name in BACKENDS:
        backend = backends.get_backend(name)
        assert isinstance(backend, backends.Backend) and backend.name == name
        assert backends.get_backend(name) is backend  # resolved once


def test_the_registry_imports_no_framework():
    code = ("import sys, ptycho.backends as b; b.spec('pytorch'); b.check_execution('tensorflow', "
            "b.execution_from({})); print(sorted({'torch', 'tensorflow', 'lightning'} & set(sys.modules)))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert res.stdout.strip() == "[]"


def test_abilities_are_checked_once_with_clear_messages():
    with pytest.raises(PtychoInputError, match="unknown backend 'jax'"):
        backends.spec("jax")
    with pytest.raises(PtychoInputError, match="single-process only"):
        backends.check_execution("tensorflow", PyTorchExecutionConfig(n_devices=2, strategy="ddp"))
    backends.check_execution("pytorch", PyTorchExecutionConfig(n_devices=2, strategy="ddp"))
    with pytest.raises(PtychoInputError, match="--refine_iterations"):
        backends.check_execution("tensorflow", PyTorchExecutionConfig(refine_iterations=5))
    with pytest.raises(PtychoInputError, match="--refine_smoothing"):  # typed at its default value: still refused
        backends.check_refinement("tensorflow", PyTorchExecutionConfig(), given=("refine_smoothing",))
    with pytest.raises(PtychoInputError, match="scans/: a corpus"):
        backends.check_corpus("tensorflow", "scans/")
    backends.check_corpus("pytorch", "scans/")
