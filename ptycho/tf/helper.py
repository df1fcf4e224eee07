"""TensorFlow physics of the PtychoPINN forward model, and ``reassemble_position`` (the stitcher Ptychodus calls).

Mirror of ``ptycho_torch/physics.py`` (same formulas, same layouts: patches are (B, C, N, N), offsets (B, C, 2) as
(x, y) = (column, row) pixels): far-field amplitude fftshift(|FFT2(Psi)|)/N with the orthonormal FFT, the Poisson
deviance on counts, bilinear translation with zeros outside, the real-space overlap constraint for gridsize > 1, and
the back-propagated object estimate that the network gets as input next to the amplitudes.
``tests/test_tf_physics.py`` compares each function with its torch counterpart.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import tensorflow as tf

from ptycho.errors import PtychoInputError
from ptycho.stitching import OffsetArray, legacy_offsets_to_xy, stitch_patches

__all__ = [
    "far_field_amplitude",
    "backpropagated_object",
    "poisson_nll",
    "translate",
    "overlap_constraint",
    "legacy_offsets_to_xy",
    "reassemble_position",
    "OffsetArray",
]


def far_field_amplitude(exit_wave: tf.Tensor) -> tf.Tensor:
    """|FFT2(Psi)|/N over the last two axes, DC centred; sum A^2 = sum |Psi|^2 (orthonormal FFT)."""
    n = tf.cast(tf.shape(exit_wave)[-1], tf.float32)
    spectrum = tf.signal.fft2d(exit_wave)
    return tf.signal.fftshift(tf.abs(spectrum) / n, axes=(-2, -1))


def backpropagated_object(amplitudes: tf.Tensor, probe: tf.Tensor, threshold: float = 0.1) -> tf.Tensor:
    """Object estimate (B, C, N, N) complex from amplitudes (B, C, N, N) alone (see the torch version).

    The amplitudes get the far-field phase of the bare probe, are propagated back to the sample (orthonormal inverse
    FFT) and divided by the probe where |P| >= ``threshold`` * max|P|; zero elsewhere.
    """
    probe = tf.cast(probe, tf.complex64)
    n = tf.cast(tf.shape(probe)[-1], tf.complex64)
    far_probe = tf.signal.fftshift(tf.signal.fft2d(probe) / n, axes=(-2, -1))
    angle = tf.math.angle(far_probe)
    phasor = tf.complex(tf.cos(angle), tf.sin(angle))
    spectrum = tf.complex(tf.cast(amplitudes, tf.float32), 0.0) * phasor
    exit_wave = tf.signal.ifft2d(tf.signal.ifftshift(spectrum, axes=(-2, -1))) * n
    magnitude = tf.abs(probe)
    support = magnitude >= threshold * tf.reduce_max(magnitude)
    safe_probe = tf.where(support, probe, tf.ones_like(probe))
    return tf.where(support, exit_wave / safe_probe, tf.zeros_like(exit_wave))


def poisson_nll(predicted: tf.Tensor, observed: tf.Tensor, predicted_scale: tf.Tensor,
                observed_scale: float) -> tf.Tensor:
    """Mean Poisson deviance of counts k = (s_obs A_obs)^2 under rate (s_pred A_pred)^2 (see the torch version)."""
    rate = tf.square(predicted_scale * predicted) + 1e-8
    counts = tf.square(observed_scale * observed)
    return tf.reduce_mean(rate - counts - tf.math.xlogy(counts, rate / tf.maximum(counts, 1e-8)))


def realspace_error(obj: tf.Tensor, truth: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """|O e^{-ic} - T| per pixel, c each patch's constant phase offset against T (see the torch version)."""
    inner = tf.reduce_sum(obj * tf.math.conj(truth) * tf.complex(window, 0.0), axis=(-2, -1), keepdims=True)
    magnitude = tf.abs(inner)
    rotation = tf.where(magnitude > 0, tf.math.conj(inner) / tf.complex(tf.maximum(magnitude, 1e-30), 0.0),
                        tf.ones_like(inner))
    return tf.abs(obj * tf.stop_gradient(rotation) - truth)


def weighted_mean(values: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """Mean of ``values`` weighted by a broadcastable ``window``."""
    weights = tf.broadcast_to(window, tf.shape(values))
    return tf.reduce_sum(values * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


def _shift_axis(images: tf.Tensor, shift: tf.Tensor, axis: int) -> tf.Tensor:
    """Shift (M, H, W) images by ``shift`` (M,) pixels along axis 1 or 2, bilinear, zeros outside."""
    size = tf.shape(images)[axis]
    sample = -shift  # output(p) = input(p - shift)
    base = tf.floor(sample)
    frac = tf.cast(sample - base, images.dtype)
    base = tf.cast(base, tf.int32)
    pad = [[0, 0], [0, 0], [0, 0]]
    pad[axis] = [1, 1]
    padded = tf.pad(images, pad)
    positions = tf.range(size)[None, :] + base[:, None]  # (M, size)
    lo = tf.clip_by_value(positions + 1, 0, size + 1)
    hi = tf.clip_by_value(positions + 2, 0, size + 1)
    a = tf.gather(padded, lo, axis=axis, batch_dims=1)
    b = tf.gather(padded, hi, axis=axis, batch_dims=1)
    f = frac[:, None, None]
    return (1 - f) * a + f * b


def translate(images: tf.Tensor, shifts_xy: tf.Tensor) -> tf.Tensor:
    """Shift real images (B, K, H, W) by (dx, dy) pixels each (B, K, 2); bilinear, zeros outside.

    The same bilinear convention as ptycho_torch.group_canvas (torch grid_sample, align_corners=False).
    """
    shape = tf.shape(images)
    flat = tf.reshape(images, [-1, shape[2], shape[3]])
    shifts = tf.reshape(tf.cast(shifts_xy, images.dtype), [-1, 2])
    out = _shift_axis(flat, shifts[:, 1], axis=1)
    out = _shift_axis(out, shifts[:, 0], axis=2)
    return tf.reshape(out, shape)


def overlap_constraint(patches: tf.Tensor, offsets_xy: tf.Tensor) -> tf.Tensor:
    """Average the C patches (B, C, N, N) of each group on one shared canvas and re-extract them (``object_big``).

    The canvas margin is ceil(max |offset|) + 1 as in the torch version, computed in-graph so the same function
    serves eager calls and compiled training/prediction steps.
    """
    C = patches.shape[1]
    if C == 1:
        return patches
    N = tf.shape(patches)[-1]
    offsets_xy = tf.cast(offsets_xy, tf.float32)
    pad = tf.cast(tf.math.ceil(tf.reduce_max(tf.abs(offsets_xy))), tf.int32) + 1
    re, im = tf.math.real(patches), tf.math.imag(patches)
    parts = tf.concat([re, im, tf.ones_like(re)], axis=1)  # (B, 3C, N, N)
    padded = tf.pad(parts, [[0, 0], [0, 0], [pad, pad], [pad, pad]])
    offsets3 = tf.tile(offsets_xy, [1, 3, 1])
    size = N + 2 * pad
    placed = tf.reduce_sum(tf.reshape(translate(padded, offsets3), [-1, 3, C, size, size]), axis=2)
    weight = tf.maximum(placed[:, 2:3], 1e-3)
    merged = tf.concat([placed[:, 0:1] / weight, placed[:, 1:2] / weight], axis=1)  # (B, 2, S, S)
    merged = tf.repeat(merged, C, axis=1)  # real parts then imag parts per member
    back = translate(merged, -tf.tile(offsets_xy, [1, 2, 1]))
    cropped = back[:, :, pad:pad + N, pad:pad + N]
    return tf.complex(cropped[:, :C], cropped[:, C:])


def _patches_bc(obj: Any) -> np.ndarray:
    """Predicted patches (B, N, N, C) (the model's channels-last output), (B, N, N) -> (B, C, N, N)."""
    arr = np.asarray(obj)
    if arr.ndim == 3:
        return arr[:, None]
    if arr.ndim == 4:
        return np.transpose(arr, (0, 3, 1, 2))
    raise PtychoInputError(f"predicted patches must be (B, N, N, C) or (B, N, N), got shape {arr.shape}")


def reassemble_position(obj_tensor: Any, global_offsets: Any, M: int = 20,
                        canvas_shape: Optional[tuple[int, int]] = None) -> np.ndarray:
    """Stitch predicted patches onto one object: (H, W, 1) complex64 (``numpy.squeeze`` gives the 2-D object).

    ``global_offsets`` are the patch centres in object pixels ((B, 1, 2, C) as ``ptycho.loader.load`` returns
    them); each patch contributes its central M x M window. The canvas is ``canvas_shape``, else the one carried
    by the offsets (the objectGuess frame), else the frame from (0, 0) that covers every patch.
    """
    patches = _patches_bc(obj_tensor)
    xy = legacy_offsets_to_xy(global_offsets)
    B, C, N, _ = patches.shape
    if xy.shape[:2] != (B, C):
        raise PtychoInputError(f"reassemble_position: {B}x{C} patches but offsets for {xy.shape[0]}x{xy.shape[1]}")
    canvas = canvas_shape or getattr(global_offsets, "canvas_shape", None)
    stitched = stitch_patches(patches.reshape(B * C, N, N), xy[..., 0].ravel(), xy[..., 1].ravel(),
                              canvas_shape=canvas, window="central", middle_trim=int(M), pad_eval=True)
    return stitched.object[..., None]
