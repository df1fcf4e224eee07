"""Differentiable ptychographic forward model (see docs/data-contract.md and the physics reference).

Exit wave Psi = O * P, far-field amplitude A = fftshift(|FFT2(Psi)|) / N (orthonormal FFT), photon counts
lambda = (s * A)^2 with intensity scale s. Measured amplitudes are normalised per scan so that a typical object
amplitude is O(1): this keeps sigmoid-bounded amplitude heads in range whatever units the file uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np
import torch

from ptycho import normalisation
from ptycho_torch.group_canvas import GroupCanvas

__all__ = [
    "normalize_probe",
    "probe_support",
    "amplitude_normalisation",
    "intensity_scale",
    "far_field_amplitude",
    "backpropagated_object",
    "poisson_nll",
    "weighted_mean",
    "overlap_constraint",
    "physics_layers",
    "modulus_correction",
    "ILLUMINATION_FLOOR",
    "ENERGY_FRACTION",
]

#: One definition for both backends (ptycho.normalisation); see there for why it is below 1.
ENERGY_FRACTION = normalisation.ENERGY_FRACTION


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def probe_support(probe: torch.Tensor, threshold: float = 0.05) -> torch.Tensor:
    """Boolean mask of pixels where |P| is at least ``threshold`` of its maximum (as ptycho.normalisation).

    Kept in torch, not wrapped: backpropagated_object calls it in every forward pass, on the model's device.
    """
    magnitude = probe.abs()
    return magnitude >= threshold * magnitude.amax(dim=(-2, -1), keepdim=True)  # per probe of a (..., N, N) stack


def normalize_probe(probe: torch.Tensor, probe_scale: float, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """P / (probe_scale * mean|P| over the support), zeroed outside ``mask`` when given (ptycho.normalisation)."""
    normalised = normalisation.normalize_probe(_numpy(probe), probe_scale, None if mask is None else _numpy(mask))
    return torch.from_numpy(normalised).to(probe.device)


def amplitude_normalisation(diffraction: torch.Tensor, probe: torch.Tensor) -> float:
    """Factor alpha that gives the scan a mean pattern energy of ENERGY_FRACTION * sum|P|^2 (ptycho.normalisation)."""
    return normalisation.amplitude_normalisation(_numpy(diffraction), _numpy(probe))


def intensity_scale(normalised_diffraction: torch.Tensor, nphotons: float) -> float:
    """s = sqrt(nphotons / mean sum A^2): normalised amplitudes -> photon counts (ptycho.normalisation)."""
    return normalisation.intensity_scale(_numpy(normalised_diffraction), nphotons)


def far_field_amplitude(exit_wave: torch.Tensor) -> torch.Tensor:
    """|FFT2(Psi)|/N, DC centred; the orthonormal FFT makes sum A^2 = sum |Psi|^2."""
    spectrum = torch.fft.fft2(exit_wave, norm="ortho")
    return torch.fft.fftshift(spectrum.abs(), dim=(-2, -1))


def backpropagated_object(amplitudes: torch.Tensor, probe: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Object estimate from amplitudes alone: give them the far-field phase of the bare probe, propagate back to
    the sample, divide by the probe where it is at least ``threshold`` of its peak (zero elsewhere).

    For an object close to 1 the exit wave's far field has the probe's phase, so this is close to O; for real
    objects it is a rough but *local* estimate, the network's physics-aware input (see model.network_input).
    """
    far_probe = torch.fft.fftshift(torch.fft.fft2(probe, norm="ortho"), dim=(-2, -1))
    phasor = torch.polar(torch.ones_like(far_probe.real), far_probe.angle())
    exit_wave = torch.fft.ifft2(torch.fft.ifftshift(amplitudes * phasor, dim=(-2, -1)), norm="ortho")
    support = probe_support(probe, threshold)
    safe_probe = torch.where(support, probe, torch.ones_like(probe))
    return torch.where(support, exit_wave / safe_probe, torch.zeros_like(exit_wave))


def poisson_nll(predicted: torch.Tensor, observed: torch.Tensor, predicted_scale: torch.Tensor,
                observed_scale: float | torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean Poisson deviance of counts k = (s_obs A_obs)^2 under rate lambda = (s_pred A_pred)^2.

    This is the negative log-likelihood lambda - k log lambda minus its value at the perfect fit lambda = k, so it
    has the same gradients, is >= 0 and reads 0 for a perfect model (easier to follow in logs). Scales may be
    scalars or per sample (B, 1, 1, 1). ``weights`` (broadcastable, e.g. a (B, 1, N, N) detector mask with 0 on
    bad pixels) leaves pixels out of the mean.
    """
    rate = (predicted_scale * predicted).pow(2) + 1e-8
    counts = (observed_scale * observed).pow(2)
    deviance = rate - counts - torch.xlogy(counts, rate / counts.clamp_min(1e-8))
    return weighted_mean(deviance, weights)


def illumination_window(probe: torch.Tensor) -> torch.Tensor:
    """|P|^2 scaled to max 1 per probe ((N, N) or (B, 1, N, N)): where a patch is constrained by its data."""
    intensity = probe.abs().float().pow(2)
    return intensity / intensity.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def realspace_error(obj: torch.Tensor, truth: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """|O e^{-ic} - T| per pixel, with c each patch's constant phase offset against the truth T.

    The data cannot fix a patch's constant phase (|F(O e^{ic} P)| = |F(O P)|), so a loss that compares absolute
    phases asks the network to guess it, and averaging guesses shrinks the amplitude. c is the phase of the
    window-weighted inner product <O, T> (the least-squares optimum), held constant in the gradient; the phase
    between patches is restored at inference by ptycho.phase_sync.
    """
    inner = (obj * truth.conj() * window).sum(dim=(-2, -1), keepdim=True)
    magnitude = inner.abs()
    rotation = torch.where(magnitude > 0, inner.conj() / magnitude.clamp_min(1e-30), torch.ones_like(inner))
    return (obj * rotation.detach() - truth).abs()


def weighted_mean(values: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of ``values`` over the pixels ``weights`` keeps (all of them without weights)."""
    if weights is None:
        return values.mean()
    weights = weights.to(values.dtype).expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def _consensus(canvas: GroupCanvas, patches: torch.Tensor) -> torch.Tensor:
    """(B, C, N, N) complex patches -> (B, 2, S, S) real/imag planes of their mean where they overlap."""
    parts = torch.stack([patches.real, patches.imag, torch.ones_like(patches.real)], dim=2)  # (B, C, 3, N, N)
    placed = canvas.splat(parts)
    return placed[:, :2] / placed[:, 2:3].clamp_min(1e-3)


def _patches(planes: torch.Tensor) -> torch.Tensor:
    """(B, C, 2, N, N) real/imag planes -> (B, C, N, N) complex."""
    return torch.complex(planes[:, :, 0], planes[:, :, 1])


def overlap_constraint(patches: torch.Tensor, offsets_xy: torch.Tensor) -> torch.Tensor:
    """Real-space overlap constraint for a group of C neighbouring patches (``object_big``).

    Places the C predicted patches (B, C, N, N) at their offsets from the group centre on one shared canvas,
    averages where they overlap, and re-extracts each patch: every member then agrees with its neighbours on the
    shared object, which is what lets the physics loss pin down the object.
    """
    B, C, N, _ = patches.shape
    if C == 1:
        return patches
    canvas = GroupCanvas(offsets_xy.float(), N)
    return _patches(canvas.extract(_consensus(canvas, patches)))


#: Fraction of the peak summed illumination added to the divisor of a physics step (the refiner's and the physics
#: layers'): barely lit pixels would otherwise take huge, noise-driven steps.
ILLUMINATION_FLOOR = 0.05


def modulus_correction(spectrum: torch.Tensor, measured: torch.Tensor, weight: Optional[torch.Tensor] = None,
                       guard: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """The step every physics update shares: (residual |Psi| - A, exit-wave change psi - psi').

    ``spectrum`` is FFT2(Psi) (orthonormal, FFT layout), ``measured`` the amplitudes A in the same layout, psi' the
    exit wave with its far-field modulus replaced by A. ``weight`` (0 on bad detector pixels) leaves pixels
    unimposed there. Where |Psi| is 0 so is Psi, and the change stays 0; ``guard`` bounds the division: the
    refiner (no autograd) uses 1e-12, the physics layers 1e-6 so that their gradients stay finite.
    """
    magnitude = spectrum.abs()
    residual = magnitude - measured
    if weight is not None:
        residual = residual * weight
    change = torch.fft.ifft2(spectrum * (residual / magnitude.clamp_min(guard)), norm="ortho")
    return residual, change


def physics_layers(patches: torch.Tensor, amplitudes: torch.Tensor, probe: torch.Tensor,
                   offsets_xy: Optional[torch.Tensor], step_sizes: torch.Tensor,
                   priors: Optional[Sequence[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = None,
                   valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The network's physics layers: per entry of ``step_sizes`` one preconditioned step towards the measured
    amplitudes on each group's shared canvas (starting from the patches' overlap consensus), then that layer's
    learned prior ``priors[i](canvas, lit)`` when given.

    Each step is the refiner's (``ptycho_torch.refine``) restricted to the group: the exit wave's far-field modulus
    is replaced by the measured one, conj(P) times the change is splatted onto the canvas and divided by the
    summed illumination (plus a floor). A prior maps the (B, 2, S, S) Re/Im canvas and the (B, 1, S, S) illumination
    scaled to max 1 to a new canvas. Differentiable, so the network, the step sizes and the priors learn together.
    ``offsets_xy`` None treats each patch on its own. ``amplitudes`` are DC-centred like ``far_field_amplitude``'s
    output; ``probe`` is (N, N) or one per sample (B, 1, N, N). ``valid`` (same shapes as the probe, DC-centred),
    0 on bad detector pixels: there the measurement is not imposed (the model's own modulus stands).
    """
    B, C, N, _ = patches.shape
    if offsets_xy is None:
        patches, amplitudes = patches.reshape(B * C, 1, N, N), amplitudes.reshape(B * C, 1, N, N)
        if probe.dim() == 4:
            probe = probe.expand(B, C, N, N).reshape(B * C, 1, N, N)
        if valid is not None and valid.dim() == 4:
            valid = valid.expand(B, C, N, N).reshape(B * C, 1, N, N)
        return physics_layers(patches, amplitudes, probe, patches.new_zeros(B * C, 1, 2).real, step_sizes,
                              priors, valid).reshape(B, C, N, N)
    canvas = GroupCanvas(offsets_xy.float(), N)
    intensity = probe.abs().pow(2).float().expand(B, C, N, N)
    illumination = canvas.splat(intensity[:, :, None])  # (B, 1, S, S)
    peak = illumination.amax(dim=(-2, -1), keepdim=True)
    scale = 1.0 / (illumination + (ILLUMINATION_FLOOR * peak).clamp_min(1e-12))
    measured = torch.fft.ifftshift(amplitudes.float(), dim=(-2, -1))
    weight = None if valid is None else torch.fft.ifftshift(valid.float(), dim=(-2, -1))
    conj_probe = probe.conj()
    obj = _consensus(canvas, patches)
    lit = illumination / peak.clamp_min(1e-12)
    for index, step in enumerate(step_sizes):
        spectrum = torch.fft.fft2(_patches(canvas.extract(obj)) * probe, norm="ortho")
        _, exit_error = modulus_correction(spectrum, measured, weight)
        exit_error = exit_error * conj_probe
        obj = obj - step * scale * canvas.splat(torch.stack([exit_error.real, exit_error.imag], dim=2))
        if priors is not None:
            obj = priors[index](obj, lit)
    return _patches(canvas.extract(obj))
