"""benchmarks/scenes.py: the held-out scan PtychoPINN (quality.py) and pty-chi (ptychi_compare.py) are scored on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import scenes  # noqa: E402


def test_held_out_scan_is_deterministic_and_shaped():
    a, b = scenes.held_out_scan(1e6), scenes.held_out_scan(1e6)
    assert a.diffraction.shape == (144, 64, 64) and a.diffraction.dtype == np.float32
    assert a.probe.shape == (64, 64) and a.object_guess.shape == (256, 256)
    assert a.xcoords.shape == a.ycoords.shape == (144,)
    for name in ("diffraction", "probe", "xcoords", "ycoords", "object_guess"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.nphotons_from_metadata() == 1e6 and a.metadata["simulator"]["seed"] == scenes.HELD_OUT_SEED
    # every patch lies inside the object
    assert a.xcoords.min() >= 32 and a.xcoords.max() <= 256 - 32
    assert a.ycoords.min() >= 32 and a.ycoords.max() <= 256 - 32


def test_dose_changes_only_the_noise():
    hi, lo = scenes.held_out_scan(1e6), scenes.held_out_scan(1e4)
    np.testing.assert_array_equal(hi.object_guess, lo.object_guess)
    np.testing.assert_array_equal(hi.xcoords, lo.xcoords)
    assert not np.array_equal(hi.diffraction, lo.diffraction)


def test_training_scan_is_a_different_object():
    train, test = scenes.training_scan(1e4), scenes.held_out_scan(1e4)
    assert train.object_guess.shape == (scenes.TRAIN_OBJECT_SIZE,) * 2 and train.N == test.N == 64
    assert train.metadata["simulator"]["seed"] != test.metadata["simulator"]["seed"]
