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


def _amplitudes(probe: np.ndarray, B: int, C: int) -> np.ndarray:
    """Noise-free amplitudes (B, C, N, N) of probe * patches of a simulated object.

    Random amplitudes would not do: where the probe's far field is ~1e-6 of its peak its phase is float32 noise
    (different in every FFT implementation) and random amplitudes there amplify that to ~1e-3 in the estimate.
    """
    N = probe.shape[-1]
    obj = make_object("grf", 3 * N, np.random.default_rng(1))
    x, y = RNG.uniform(N // 2 + 1, 2.5 * N - 1, (2, B * C))
    patches = extract_patches(obj, x, y, N).reshape(B, C, N, N)
    return np.abs(np.fft.fftshift(np.fft.fft2(patches * probe, norm="ortho"), axes=(-2, -1))).astype(np.float32)


def test_backpropagated_object_matches_torch_and_recovers_a_flat_object():
    probe = make_probe(32)
    amplitudes = _amplitudes(probe, 2, 3)
    ours = tf_helper.backpropagated_object(tf.constant(amplitudes), tf.constant(probe)).numpy()
    ref = torch_physics.backpropagated_object(torch.from_numpy(amplitudes), torch.from_numpy(probe)).numpy()
    assert ours.shape == (2, 3, 32, 32) and np.iscomplexobj(ours)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    support = np.abs(probe) >= 0.1 * np.abs(probe).max()
    assert np.all(ours[..., ~support] == 0)
    # O = 0.7 exp(0.3i) everywhere: the far field then carries the probe's phase, so the estimate is exact
    flat = tf_helper.far_field_amplitude(tf.constant(0.7 * probe[None, None]))
    estimate = tf_helper.backpropagated_object(flat, tf.constant(probe)).numpy()[0, 0]
    np.testing.assert_allclose(np.abs(estimate[support]), 0.7, atol=1e-3)


def _torch_to_keras(torch_model, keras_model) -> None:
    """Copy a torch PtychoPINN's weights into the Keras one (conv kernels OIHW -> HWIO)."""
    names = {"log_intensity_scale": "log_intensity_scale", "probe_real": "probe_real", "probe_imag": "probe_imag",
             "probe_mask": "probe_mask"}
    for key in torch_model.state_dict():
        parts = key.split(".")
        if parts[0] != "net":
            continue
        kind = "kernel" if parts[-1] == "weight" else "bias"
        if parts[1] == "encoder":  # net.encoder.i.{0,2}.weight
            names[key] = f"object_net/enc{parts[2]}/conv{1 + int(parts[3]) // 2}/{kind}"
        elif parts[2] == "blocks":  # net.amplitude.blocks.i.{0,2}.weight
            names[key] = f"object_net/{parts[1]}/block{parts[3]}/conv{1 + int(parts[4]) // 2}/{kind}"
        else:  # net.amplitude.head.weight
            names[key] = f"object_net/{parts[1]}/head/{kind}"
    variables = {w.path.split("/", 1)[1]: w for w in keras_model.weights}
    state = torch_model.state_dict()
    for key, path in names.items():
        value = state[key].numpy()
        variables[path].assign(value.transpose(2, 3, 1, 0) if value.ndim == 4 else value)
    assert set(names.values()) == set(variables)


def test_network_input_and_unet_match_torch_with_the_same_weights():
    from ptycho.config.config import ModelConfig
    from ptycho.tf.model import INPUT_PLANES, build_model, network_input
    from ptycho_torch import model as torch_model

    assert INPUT_PLANES == torch_model.INPUT_PLANES
    torch.manual_seed(0)
    cfg = ModelConfig(N=64, gridsize=2, n_filters_scale=1)
    probe = make_probe(64)
    ref_model = torch_model.PtychoPINN(cfg, torch.from_numpy(probe), 2.5)
    ours = build_model(cfg, probe, 1.0)
    _torch_to_keras(ref_model, ours)
    diffraction = _amplitudes(probe, 2, 4)
    offsets = RNG.uniform(-4, 4, (2, 4, 2)).astype(np.float32)
    channels_last = np.transpose(diffraction, (0, 2, 3, 1))

    inputs = network_input(tf.constant(channels_last), ours.probe).numpy()
    ref_inputs = torch_model.network_input(torch.from_numpy(diffraction), ref_model.probe).numpy()
    np.testing.assert_allclose(inputs, np.transpose(ref_inputs, (0, 2, 3, 1)), atol=1e-3)  # float32 FFT noise / |P|

    with torch.no_grad():
        ref = ref_model.object_patches(torch.from_numpy(diffraction), torch.from_numpy(offsets)).numpy()
    np.testing.assert_allclose(ours.object_patches(tf.constant(channels_last), tf.constant(offsets)).numpy(), ref,
                               atol=1e-4)
    # the legacy Ptychodus signature: [X * intensity_scale, offsets (B, 1, 2, C)] -> (B, N, N, C)
    legacy = ours([channels_last * 2.5, np.transpose(offsets, (0, 2, 1))[:, None]]).numpy()
    np.testing.assert_allclose(legacy, np.transpose(ref, (0, 2, 3, 1)), atol=1e-4)


def test_poisson_nll_matches_torch_and_is_zero_at_the_truth():
    pred = RNG.uniform(0.1, 2, (4, 1, 8, 8)).astype(np.float32)
    obs = RNG.uniform(0.0, 2, (4, 1, 8, 8)).astype(np.float32)
    ours = float(tf_helper.poisson_nll(tf.constant(pred), tf.constant(obs), tf.constant(3.0), 2.5))
    ref = float(torch_physics.poisson_nll(torch.from_numpy(pred), torch.from_numpy(obs), torch.tensor(3.0), 2.5))
    assert ours == pytest.approx(ref, rel=1e-4)
    at_truth = float(tf_helper.poisson_nll(tf.constant(obs), tf.constant(obs), tf.constant(2.0), 2.0))
    assert abs(at_truth) < 1e-4 < ours


def test_realspace_error_matches_torch_and_ignores_constant_phases():
    from ptycho.tf.helper import realspace_error, weighted_mean

    truth, pred = _complex((2, 4, 8, 8)), _complex((2, 4, 8, 8))
    window = RNG.uniform(0, 1, (8, 8)).astype(np.float32)
    ours = realspace_error(tf.constant(pred), tf.constant(truth), tf.constant(window)).numpy()
    ref = torch_physics.realspace_error(torch.from_numpy(pred), torch.from_numpy(truth), torch.from_numpy(window))
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-4, atol=1e-5)
    offsets = np.exp(1j * RNG.uniform(-np.pi, np.pi, (2, 4, 1, 1))).astype(np.complex64)
    rotated = realspace_error(tf.constant(truth * offsets), tf.constant(truth), tf.constant(window))
    assert float(weighted_mean(rotated, tf.constant(window))) < 1e-5


def test_translate_is_a_bilinear_shift_with_zeros_entering():
    from scipy.ndimage import shift as bilinear_shift

    images = RNG.standard_normal((2, 3, 12, 10)).astype(np.float32)
    shifts = RNG.uniform(-4, 4, (2, 3, 2)).astype(np.float32)
    ours = tf_helper.translate(tf.constant(images), tf.constant(shifts)).numpy()
    ref = np.stack([np.stack([bilinear_shift(images[b, k], (shifts[b, k, 1], shifts[b, k, 0]), order=1,
                                             mode="grid-constant", cval=0.0) for k in range(3)]) for b in range(2)])
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
