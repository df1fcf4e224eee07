"""Physics layer: far-field amplitude, Poisson NLL, probe/scan normalisation and the overlap constraint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptycho.simulate import make_probe
from ptycho_torch.physics import (
    ENERGY_FRACTION,
    amplitude_normalisation,
    backpropagated_object,
    far_field_amplitude,
    modulus_correction,
    normalize_probe,
    overlap_constraint,
    physics_layers,
    poisson_nll,
    probe_support,
)

torch.set_num_threads(1)


def _complex_noise(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))


# ---------------------------------------------------------------------------------------------- far field
def test_backpropagated_object_is_exact_for_a_flat_object_and_zero_off_support():
    probe = normalize_probe(torch.from_numpy(make_probe(64)), 4.0)
    amplitudes = far_field_amplitude(probe)  # what a flat object O = 1 gives
    estimate = backpropagated_object(amplitudes[None, None], probe)[0, 0]
    support = probe.abs() >= 0.1 * probe.abs().max()
    assert torch.allclose(estimate[support], torch.ones_like(estimate[support]), atol=1e-4)
    assert torch.all(estimate[~support] == 0)


def test_backpropagated_object_follows_a_smooth_phase_object():
    from scipy.ndimage import gaussian_filter

    probe = normalize_probe(torch.from_numpy(make_probe(64)), 4.0)
    field = gaussian_filter(np.random.default_rng(3).standard_normal((64, 64)), 3)
    phase = torch.from_numpy(0.5 * field / field.std()).float()
    estimate = backpropagated_object(far_field_amplitude(probe * torch.polar(torch.ones(64, 64), phase)), probe)
    support = probe.abs() >= 0.5 * probe.abs().max()
    corr = np.corrcoef(estimate.angle()[support].numpy(), phase[support].numpy())[0, 1]
    assert corr > 0.7  # measured 0.78; an unrelated estimate would give about 0




@pytest.mark.parametrize("N", [64, 128])
def test_far_field_amplitude_obeys_parseval(N):
    psi = _complex_noise(3, 2, N, N, seed=N)
    amplitude = far_field_amplitude(psi)
    assert amplitude.shape == psi.shape
    assert not amplitude.is_complex()
    assert torch.all(amplitude >= 0)
    torch.testing.assert_close(amplitude.pow(2).sum(dim=(-2, -1)), psi.abs().pow(2).sum(dim=(-2, -1)),
                               rtol=1e-5, atol=0)


def test_far_field_of_flat_wave_is_a_dc_peak_at_the_centre():
    N = 64
    flat = torch.full((1, 1, N, N), 0.7 + 0.2j, dtype=torch.complex64)
    amplitude = far_field_amplitude(flat)[0, 0]
    peak = divmod(int(amplitude.argmax()), N)
    assert peak == (N // 2, N // 2)
    # orthonormal FFT: all the energy N^2 |c|^2 sits in that single pixel, amplitude N |c|
    assert float(amplitude[N // 2, N // 2]) == pytest.approx(N * abs(0.7 + 0.2j), rel=1e-5)
    rest = amplitude.clone()
    rest[N // 2, N // 2] = 0
    assert float(rest.max()) < 1e-4


# ---------------------------------------------------------------------------------------------- Poisson NLL


def test_poisson_nll_is_non_negative():
    g = torch.Generator().manual_seed(1)
    predicted = torch.rand(4, 1, 32, 32, generator=g)
    observed = torch.rand(4, 1, 32, 32, generator=g)
    observed[0, 0, :4] = 0  # zero counts are legal
    for s_pred, s_obs in [(1.0, 1.0), (10.0, 3.0), (0.5, 20.0)]:
        loss = poisson_nll(predicted, observed, torch.tensor(s_pred), s_obs)
        assert loss.ndim == 0
        assert float(loss) >= -1e-6


def test_poisson_nll_vanishes_for_a_perfect_prediction():
    g = torch.Generator().manual_seed(2)
    observed = torch.rand(2, 4, 16, 16, generator=g) + 0.1
    loss = poisson_nll(observed.clone(), observed, torch.tensor(7.0), 7.0)
    assert abs(float(loss)) < 1e-4
    assert float(poisson_nll(1.2 * observed, observed, torch.tensor(7.0), 7.0)) > 1e-2


def test_poisson_nll_minimum_over_a_scale_of_the_prediction_is_at_one():
    g = torch.Generator().manual_seed(3)
    observed = torch.rand(2, 1, 16, 16, generator=g) + 0.05
    scale = torch.tensor(20.0)
    factors = torch.linspace(0.5, 1.5, 101)
    losses = torch.stack([poisson_nll(c * observed, observed, scale, 20.0) for c in factors])
    assert float(factors[int(losses.argmin())]) == pytest.approx(1.0, abs=1e-6)
    # strictly convex around the optimum: both sides are worse
    assert float(losses[40]) > float(losses[50]) < float(losses[60])


def test_poisson_nll_gradient_pulls_the_prediction_towards_the_data():
    observed = torch.full((1, 1, 8, 8), 0.5)
    predicted = torch.full((1, 1, 8, 8), 0.8, requires_grad=True)
    poisson_nll(predicted, observed, torch.tensor(10.0), 10.0).backward()
    assert torch.all(predicted.grad > 0)  # descending lowers the over-estimate


# ---------------------------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("probe_scale", [1.0, 4.0, 10.0])
def test_normalize_probe_mean_magnitude_over_support(probe_scale):
    probe = torch.from_numpy(make_probe(64))
    normalised = normalize_probe(probe, probe_scale)
    support = probe_support(probe)
    assert support.any() and not support.all()
    assert float(normalised.abs()[support].mean()) == pytest.approx(1.0 / probe_scale, rel=1e-5)
    # without a mask nothing outside the support is cut
    assert torch.allclose(normalised * (probe_scale * probe.abs()[support].mean()), probe, atol=1e-6)


def test_normalize_probe_with_mask_zeroes_outside():
    probe = torch.from_numpy(make_probe(64))
    mask = probe_support(probe)
    normalised = normalize_probe(probe, 4.0, mask)
    assert float(normalised.abs()[mask].mean()) == pytest.approx(0.25, rel=1e-5)
    assert torch.all(normalised[~mask] == 0)


def test_amplitude_normalisation_gives_the_target_energy():
    probe = normalize_probe(torch.from_numpy(make_probe(64)), 4.0)
    g = torch.Generator().manual_seed(4)
    diffraction = 123.0 * torch.rand(10, 4, 64, 64, generator=g)  # arbitrary file units
    alpha = amplitude_normalisation(diffraction, probe)
    assert isinstance(alpha, float) and alpha > 0
    mean_energy = (alpha * diffraction.double()).pow(2).sum(dim=(-2, -1)).mean()
    target = ENERGY_FRACTION * probe.abs().double().pow(2).sum()
    assert float(mean_energy) == pytest.approx(float(target), rel=1e-6)


# ---------------------------------------------------------------------------------------------- overlap constraint

OFFSETS = [[-6.0, -5.0], [7.0, -4.0], [-5.0, 6.0], [4.0, 3.0]]


def _smooth_object(size: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    amp = 0.6 + 0.3 * torch.sin(2 * math.pi * xx / 53) * torch.cos(2 * math.pi * yy / 41)
    phase = 0.8 * torch.sin(2 * math.pi * (xx + 2 * yy) / 67)
    return torch.polar(amp, phase)


def _patches_at(obj: torch.Tensor, centre: tuple[int, int], offsets: list[list[float]], N: int) -> torch.Tensor:
    """Patches of ``obj`` centred at centre + offset (x, y), integer offsets."""
    cx, cy = centre
    out = []
    for dx, dy in offsets:
        x0, y0 = cx + int(dx) - N // 2, cy + int(dy) - N // 2
        out.append(obj[y0:y0 + N, x0:x0 + N])
    return torch.stack(out)[None].to(torch.complex64)


def test_overlap_constraint_is_identity_for_one_patch():
    patches = _complex_noise(3, 1, 32, 32, seed=5)
    offsets = torch.zeros(3, 1, 2)
    assert torch.equal(overlap_constraint(patches, offsets), patches)


def test_overlap_constraint_keeps_consistent_patches():
    N = 32
    obj = _smooth_object(96)
    patches = _patches_at(obj, (48, 48), OFFSETS, N)
    out = overlap_constraint(patches, torch.tensor([OFFSETS]))
    assert out.shape == patches.shape and out.is_complex()
    interior = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    torch.testing.assert_close(out[interior], patches[interior], rtol=0, atol=1e-4)


def test_overlap_constraint_keeps_consistent_patches_at_subpixel_offsets():
    """Sub-pixel offsets: a smooth object is reproduced up to bilinear interpolation error."""
    N = 32
    obj = _smooth_object(96)
    offsets = [[-6.5, -5.25], [7.5, -4.0], [-5.0, 6.75], [4.0, 2.5]]
    # patches sampled at the exact sub-pixel centres (bilinear interpolation of the smooth object)
    from ptycho.geometry import extract_patches

    x = np.array([48 + o[0] for o in offsets])
    y = np.array([48 + o[1] for o in offsets])
    patches = torch.from_numpy(extract_patches(obj.numpy().astype(np.complex64), x, y, N))[None]
    out = overlap_constraint(patches, torch.tensor([offsets]))
    interior = (slice(None), slice(None), slice(3, -3), slice(3, -3))
    err = float((out[interior] - patches[interior]).abs().max())
    # bilinear placement and re-extraction blur by ~[1/4, 1/2, 1/4] at half-pixel shifts: ~0.02 here
    assert err < 0.04, err
    # placing the patches at the wrong offsets (sign flipped) is clearly inconsistent: the check has teeth
    wrong = overlap_constraint(patches, -torch.tensor([offsets]))
    assert float((wrong[interior] - patches[interior]).abs().max()) > 10 * err


def test_overlap_constraint_makes_inconsistent_patches_consistent():
    N = 32
    patches = _complex_noise(2, 4, N, N, seed=6)
    offsets = torch.tensor([OFFSETS, [[-3.0, -3.0], [3.0, -3.0], [-3.0, 3.0], [3.0, 3.0]]])
    out = overlap_constraint(patches, offsets)
    assert out.shape == patches.shape
    assert float((out - patches).abs().mean()) > 0.1  # random patches disagree, so they change
    # consistency: members agree on every object pixel they share ...
    for b in range(2):
        for i in range(4):
            for j in range(4):
                dx, dy = (offsets[b, j] - offsets[b, i]).long().tolist()
                # pixel (r, c) of member i is object pixel (r, c) + off_i; in member j that is (r - dy, c - dx)
                rows_i = slice(max(dy, 0), N + min(dy, 0))
                cols_i = slice(max(dx, 0), N + min(dx, 0))
                rows_j = slice(max(-dy, 0), N + min(-dy, 0))
                cols_j = slice(max(-dx, 0), N + min(-dx, 0))
                torch.testing.assert_close(out[b, i, rows_i, cols_i], out[b, j, rows_j, cols_j],
                                           rtol=0, atol=1e-5)
    # ... so the result is a fixed point: the shared canvas re-extracted
    torch.testing.assert_close(overlap_constraint(out, offsets), out, rtol=1e-5, atol=1e-4)


def test_overlap_constraint_averages_overlaps():
    """Two members, shifted by 4 px: the overlap holds the mean of both, the rest keeps each member's value."""
    N = 16
    patches = torch.stack([torch.full((N, N), 1.0 + 0j), torch.full((N, N), 3.0 + 1j)])[None].to(torch.complex64)
    offsets = torch.tensor([[[-2.0, 0.0], [2.0, 0.0]]])
    out = overlap_constraint(patches, offsets)
    # member 0 covers object x in [-2 - 8, -2 + 8); member 1 covers [-6, 10): shared columns of member 0 are 4..15
    torch.testing.assert_close(out[0, 0, :, 4:], torch.full((N, N - 4), 2.0 + 0.5j), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[0, 0, :, :4], torch.full((N, 4), 1.0 + 0j), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[0, 1, :, :12], torch.full((N, 12), 2.0 + 0.5j), rtol=0, atol=1e-5)
    torch.testing.assert_close(out[0, 1, :, 12:], torch.full((N, 4), 3.0 + 1j), rtol=0, atol=1e-5)


def test_overlap_constraint_is_differentiable():
    patches = _complex_noise(1, 4, 16, 16, seed=7).requires_grad_(True)
    out = overlap_constraint(patches, torch.tensor([[[-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0], [2.0, 2.0]]]))
    out.abs().sum().backward()
    assert patches.grad is not None and torch.isfinite(patches.grad.abs()).all()



# ---------------------------------------------------------------------------------------------- group canvas
def test_group_canvas_splat_is_the_adjoint_of_extract():
    from ptycho_torch.group_canvas import GroupCanvas

    g = torch.Generator().manual_seed(11)
    offsets = torch.rand(3, 4, 2, generator=g) * 12 - 6  # sub-pixel, both signs
    canvas = GroupCanvas(offsets, 16)
    board = torch.randn(3, 2, canvas.size, canvas.size, generator=g)
    values = torch.randn(3, 4, 2, 16, 16, generator=g)
    # <extract(board), values> == <board, splat(values)>: the splat is exactly the transpose of the read
    left = (canvas.extract(board) * values).sum()
    right = (board * canvas.splat(values)).sum()
    torch.testing.assert_close(left, right, rtol=1e-5, atol=1e-3)
    # an integer offset reads the canvas at pad + offset, exactly
    whole = GroupCanvas(torch.tensor([[[3.0, -2.0]]]), 16)
    board = torch.randn(1, 1, whole.size, whole.size, generator=g)
    p = whole.pad
    torch.testing.assert_close(whole.extract(board)[0, 0, 0], board[0, 0, p - 2:p + 14, p + 3:p + 19])


# ---------------------------------------------------------------------------------------------- physics layers
def _group_of(obj: torch.Tensor, probe: torch.Tensor, offsets: list[list[float]], N: int):
    """Patches of ``obj`` at integer offsets from its centre and the amplitudes they give under ``probe``."""
    c = obj.shape[-1] // 2
    patches = _patches_at(obj, (c, c), offsets, N)
    return patches, far_field_amplitude(patches * probe)


def test_physics_layers_keep_patches_that_already_explain_the_data():
    N = 32
    probe = normalize_probe(torch.from_numpy(make_probe(N)), 4.0)
    obj = torch.polar(0.6 + 0.3 * _smooth_object(96).real.float(), _smooth_object(96).real.float())
    patches, amplitudes = _group_of(obj, probe, OFFSETS, N)
    out = physics_layers(patches, amplitudes, probe, torch.tensor([OFFSETS]), torch.ones(3))
    lit = probe.abs() > 0.2 * probe.abs().max()
    torch.testing.assert_close(out[..., lit], patches[..., lit], rtol=0, atol=1e-4)


def test_physics_layers_move_a_wrong_start_towards_the_data_and_train():
    N = 32
    probe = normalize_probe(torch.from_numpy(make_probe(N)), 4.0)
    obj = torch.polar(0.6 + 0.3 * _smooth_object(96).real.float(), _smooth_object(96).real.float())
    truth, amplitudes = _group_of(obj, probe, OFFSETS, N)
    start = torch.full_like(truth, 0.7).requires_grad_(True)
    steps = torch.ones(4, requires_grad=True)
    offsets = torch.tensor([OFFSETS])

    def misfit(patches: torch.Tensor) -> torch.Tensor:
        return (far_field_amplitude(patches * probe) - amplitudes).pow(2).mean()

    out = physics_layers(start, amplitudes, probe, offsets, steps)
    assert float(misfit(out.detach())) < 0.5 * float(misfit(overlap_constraint(start.detach(), offsets)))
    misfit(out).backward()  # the network and the step sizes learn through the layers
    assert torch.isfinite(start.grad.abs()).all() and float(start.grad.abs().sum()) > 0
    assert torch.isfinite(steps.grad).all() and float(steps.grad.abs().sum()) > 0
    # no steps: exactly the overlap constraint
    torch.testing.assert_close(physics_layers(start.detach(), amplitudes, probe, offsets, torch.ones(0)),
                               overlap_constraint(start.detach(), offsets), rtol=0, atol=1e-6)


def test_physics_layers_without_offsets_treat_each_patch_alone_and_take_one_probe_per_sample():
    N = 32
    probe = normalize_probe(torch.from_numpy(make_probe(N)), 4.0)
    obj = torch.polar(0.6 + 0.3 * _smooth_object(96).real.float(), _smooth_object(96).real.float())
    truth, amplitudes = _group_of(obj, probe, OFFSETS, N)
    start = torch.full_like(truth, 0.7)
    alone = physics_layers(start, amplitudes, probe, None, torch.ones(2))
    # patch by patch gives the same as the group taken apart
    for i in range(4):
        one = physics_layers(start[:, i:i + 1], amplitudes[:, i:i + 1], probe, None, torch.ones(2))
        torch.testing.assert_close(alone[:, i:i + 1], one, rtol=1e-5, atol=1e-5)
    per_sample = physics_layers(start, amplitudes, probe[None, None], None, torch.ones(2))
    torch.testing.assert_close(per_sample, alone, rtol=1e-5, atol=1e-5)


def test_physics_layers_apply_each_prior_after_its_step():
    N = 32
    probe = normalize_probe(torch.from_numpy(make_probe(N)), 4.0)
    obj = torch.polar(0.6 + 0.3 * _smooth_object(96).real.float(), _smooth_object(96).real.float())
    truth, amplitudes = _group_of(obj, probe, OFFSETS, N)
    start, offsets = torch.full_like(truth, 0.7), torch.tensor([OFFSETS])
    seen = []

    def prior(index: int):
        def apply(canvas: torch.Tensor, lit: torch.Tensor) -> torch.Tensor:
            seen.append((index, tuple(canvas.shape), float(lit.max())))
            return canvas * 0 + index  # a canvas the next step starts from: Re = Im = index
        return apply

    out = physics_layers(start, amplitudes, probe, offsets, torch.zeros(2), [prior(1), prior(2)])
    assert [s[0] for s in seen] == [1, 2] and seen[0][1][:2] == (1, 2) and seen[0][2] == 1.0
    torch.testing.assert_close(out, torch.full_like(out, 2.0 + 2.0j))  # zero steps: the last prior's canvas


def test_physics_layers_leave_bad_detector_pixels_unimposed():
    """A bad pixel's recorded value (here 0) must not pull the object: with the mask the layers give what they give
    on data whose bad pixel holds the right value; without it they differ."""
    N = 32
    probe = normalize_probe(torch.from_numpy(make_probe(N)), 4.0)
    obj = torch.polar(0.6 + 0.3 * _smooth_object(96).real.float(), _smooth_object(96).real.float())
    truth, amplitudes = _group_of(obj, probe, OFFSETS, N)
    start, offsets = torch.full_like(truth, 0.7), torch.tensor([OFFSETS])
    valid = torch.ones(N, N)
    valid[N // 2 - 2:N // 2 + 2, N // 2 - 2:N // 2 + 2] = 0  # dead pixels where the signal is strongest
    corrupted = amplitudes * valid
    masked = physics_layers(start, corrupted, probe, offsets, torch.ones(2), valid=valid)
    reference = physics_layers(start, amplitudes, probe, offsets, torch.ones(2), valid=valid)
    torch.testing.assert_close(masked, reference)
    unmasked = physics_layers(start, corrupted, probe, offsets, torch.ones(2))
    assert float((unmasked - reference).abs().max()) > 1e-2
    # one mask per sample (corpus training), and per patch without offsets
    per_sample = physics_layers(start, corrupted, probe, offsets, torch.ones(2), valid=valid[None, None])
    torch.testing.assert_close(per_sample, masked)
    alone = physics_layers(start, corrupted, probe[None, None], None, torch.ones(2), valid=valid[None, None])
    torch.testing.assert_close(alone, physics_layers(start, amplitudes, probe, None, torch.ones(2), valid=valid))


def test_modulus_correction_replaces_the_far_field_modulus_and_keeps_the_phase():
    """psi - change has the measured modulus and Psi's phase; data already explained gives no change; weight 0
    leaves a pixel's modulus as the model has it (the refiner and the physics layers both rest on this)."""
    generator = torch.Generator().manual_seed(3)
    psi = _complex_noise(2, 16, 16, seed=3)
    spectrum = torch.fft.fft2(psi, norm="ortho")
    measured = torch.rand(2, 16, 16, generator=generator) + 0.5
    residual, change = modulus_correction(spectrum, measured)
    corrected = torch.fft.fft2(psi - change, norm="ortho")
    assert torch.allclose(corrected.abs(), measured, atol=1e-5)
    assert torch.allclose(torch.angle(corrected), torch.angle(spectrum), atol=1e-4)
    assert torch.allclose(residual, spectrum.abs() - measured)
    _, none = modulus_correction(spectrum, spectrum.abs())
    assert none.abs().max() < 1e-5
    weight = torch.ones(16, 16)
    weight[3, 5] = 0
    residual, change = modulus_correction(spectrum, measured, weight)
    corrected = torch.fft.fft2(psi - change, norm="ortho")
    assert residual[:, 3, 5].abs().max() == 0
    assert torch.allclose(corrected[:, 3, 5].abs(), spectrum[:, 3, 5].abs(), atol=1e-5)
