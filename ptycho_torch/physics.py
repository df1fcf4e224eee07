"""Differentiable ptychographic forward model (see docs/data-contract.md and the physics reference).

Exit wave Psi = O * P, far-field amplitude A = fftshift(|FFT2(Psi)|) / N (orthonormal FFT), photon counts
lambda = (s * A)^2 with intensity scale s. Measured amplitudes are normalised per scan so that a typical object
amplitude is O(1): this keeps sigmoid-bounded amplitude heads in range whatever units the file uses.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ptycho import normalisation

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


def _translate(images: torch.Tensor, shifts_xy: torch.Tensor) -> torch.Tensor:
    """Shift (B, K, [ch,] H, W) real images by (dx, dy) pixels each (B, K, 2), bilinear, zeros outside.

    The ``ch`` channels of one image share its shift, so they share one sampling grid. The grid is built as a
    pure translation of the pixel centres (align_corners=False convention) rather than through F.affine_grid,
    whose general matrix product took a third of the inference time on CPU.
    """
    B, K = images.shape[:2]
    H, W = images.shape[-2:]
    flat = images.reshape(B * K, -1, H, W)
    shifts = shifts_xy.reshape(B * K, 1, 1, 2).to(images.dtype)
    xs = (2 * torch.arange(W, dtype=images.dtype, device=images.device) + 1) / W - 1
    ys = (2 * torch.arange(H, dtype=images.dtype, device=images.device) + 1) / H - 1
    base = torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None]), dim=-1)  # (H, W, 2) as (x, y)
    # grid_sample samples the input at the output location + offset, so a shift by +d samples at -d.
    scale = torch.tensor([2.0 / W, 2.0 / H], dtype=images.dtype, device=images.device)
    grid = base - shifts * scale
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(images.shape)


def overlap_constraint(patches: torch.Tensor, offsets_xy: torch.Tensor) -> torch.Tensor:
    """Real-space overlap constraint for a group of C neighbouring patches (``object_big``).

    Places the C predicted patches (B, C, N, N) at their offsets from the group centre on one shared canvas,
    averages where they overlap, and re-extracts each patch: every member then agrees with its neighbours on the
    shared object, which is what lets the physics loss pin down the object.
    """
    B, C, N, _ = patches.shape
    if C == 1:
        return patches
    pad = int(math.ceil(float(offsets_xy.abs().max()))) + 1
    size = N + 2 * pad
    parts = torch.stack([patches.real, patches.imag, torch.ones_like(patches.real)], dim=2)  # (B, C, 3, N, N)
    placed = _translate(F.pad(parts, (pad, pad, pad, pad)), offsets_xy).sum(dim=1)  # (B, 3, S, S)
    merged = placed[:, :2] / placed[:, 2:3].clamp_min(1e-3)  # (B, 2, S, S): Re, Im of the shared canvas
    back = _translate(merged[:, None].expand(B, C, 2, size, size), -offsets_xy)
    cropped = back[..., pad:pad + N, pad:pad + N]
    return torch.complex(cropped[:, :, 0], cropped[:, :, 1])
