"""TensorFlow physics and numpy stitching agree with the torch backend's versions."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="TensorFlow backend not installed: pip install -c constraints.txt -e '.[tf]'")
torch = pytest.importorskip("torch")

from ptycho import stitching as np_stitching  # noqa: E402
from ptycho import tf_helper  # noqa: E402
from ptycho.geometry import extract_patches  # noqa: E402
from ptycho.simulate import make_object, make_probe  # noqa: E402
from ptycho_torch import physics as torch_physics  # noqa: E402
from ptycho_torch.stitching import stitch_patches as torch_stitch  # noqa: E402

RNG = np.random.default_rng(0)


def _complex(shape):
    return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(np.complex64)


def test_far_field_amplitude_matches_torch():
    psi = _complex((2, 3, 16, 16))
    ours = tf_helper.far_field_amplitude(tf.constant(psi)).numpy()
    ref = torch_physics.far_field_amplitude(torch.from_numpy(psi)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    # Parseval with the orthonormal FFT
    np.testing.assert_allclose((ours**2).sum(axis=(-2, -1)), (np.abs(psi) ** 2).sum(axis=(-2, -1)), rtol=1e-4)


def test_poisson_nll_matches_torch_and_is_zero_at_the_truth():
    pred = RNG.uniform(0.1, 2, (4, 1, 8, 8)).astype(np.float32)
    obs = RNG.uniform(0.0, 2, (4, 1, 8, 8)).astype(np.float32)
    ours = float(tf_helper.poisson_nll(tf.constant(pred), tf.constant(obs), tf.constant(3.0), 2.5))
    ref = float(torch_physics.poisson_nll(torch.from_numpy(pred), torch.from_numpy(obs), torch.tensor(3.0), 2.5))
    assert ours == pytest.approx(ref, rel=1e-4)
    at_truth = float(tf_helper.poisson_nll(tf.constant(obs), tf.constant(obs), tf.constant(2.0), 2.0))
    assert abs(at_truth) < 1e-4 < ours


def test_translate_matches_torch_grid_sample():
    images = RNG.standard_normal((2, 3, 12, 10)).astype(np.float32)
    shifts = RNG.uniform(-4, 4, (2, 3, 2)).astype(np.float32)
    ours = tf_helper.translate(tf.constant(images), tf.constant(shifts)).numpy()
    ref = torch_physics._translate(torch.from_numpy(images), torch.from_numpy(shifts)).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # integer shift is an exact roll with zeros entering
    whole = tf_helper.translate(tf.constant(images), tf.constant(np.full((2, 3, 2), [2.0, -1.0], np.float32))).numpy()
    np.testing.assert_allclose(whole[:, :, :-1, 2:], images[:, :, 1:, :-2], atol=1e-6)
    assert np.all(whole[:, :, :, :2] == 0)


def test_overlap_constraint_matches_torch_and_is_identity_for_consistent_patches():
    patches = _complex((2, 4, 16, 16))
    offsets = RNG.uniform(-3, 3, (2, 4, 2)).astype(np.float32)
    ours = tf_helper.overlap_constraint(tf.constant(patches), tf.constant(offsets)).numpy()
    ref = torch_physics.overlap_constraint(torch.from_numpy(patches), torch.from_numpy(offsets)).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert not np.allclose(ours, patches, atol=1e-2)  # inconsistent random patches do change
    # gradients flow through it
    var = tf.Variable(patches.real)
    with tf.GradientTape() as tape:
        out = tf_helper.overlap_constraint(tf.complex(var, tf.constant(patches.imag)), tf.constant(offsets))
        loss = tf.reduce_sum(tf.abs(out))
    assert np.isfinite(tape.gradient(loss, var).numpy()).all()


def test_numpy_stitching_matches_torch_stitching():
    patches = _complex((7, 16, 16))
    x = RNG.uniform(10, 40, 7)
    y = RNG.uniform(10, 30, 7)
    for kwargs in ({"middle_trim": 8}, {"middle_trim": 0, "probe": make_probe(16)}, {"pad_eval": False}):
        ours = np_stitching.stitch_patches(patches, x, y, **kwargs)
        tkw = dict(kwargs)
        if "probe" in tkw:
            tkw["probe"] = torch.from_numpy(tkw["probe"])
        ref = torch_stitch(torch.from_numpy(patches), x, y, **tkw)
        assert ours.origin == ref.origin
        np.testing.assert_allclose(ours.object, ref.object.numpy(), atol=1e-4)
        np.testing.assert_array_equal(ours.covered, ref.covered.numpy())


def test_reassemble_position_inverts_extraction_on_the_object_frame():
    obj = make_object("grf", 96, np.random.default_rng(1))
    side = np.arange(20, 77, 6.0)  # integer positions: stitching is then the exact inverse of extraction
    gx, gy = np.meshgrid(side, side)
    x, y = gx.ravel(), gy.ravel()
    patches = extract_patches(obj, x, y, 32)
    offsets = tf_helper.OffsetArray(np.stack([x, y], axis=1)[:, None, :, None], canvas_shape=obj.shape)
    out = np.squeeze(tf_helper.reassemble_position(patches[..., None], offsets, M=12))
    assert out.shape == obj.shape and np.iscomplexobj(out)
    inner = (slice(24, 72), slice(24, 72))
    np.testing.assert_allclose(out[inner], obj[inner], atol=1e-4)
    with pytest.raises(ValueError, match="offsets"):
        tf_helper.reassemble_position(patches[..., None], np.zeros((3, 5)), M=12)
