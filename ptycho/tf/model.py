"""PtychoPINN in TensorFlow/Keras: physics-aware input, U-Net with amplitude and phase decoders, physics wrapper.

Mirror of ``ptycho_torch/model.py`` (same input planes, widths, blocks, skips, heads, activations, masks, smoothing
and default weight initialisation), channels-last as Keras expects:

* ``network_input``: normalised amplitudes (B, N, N, C) -> (B, N, N, 3C) = [amplitudes, Re, Im] of the
  back-propagated object estimate (``tf_helper.backpropagated_object`` with the model's probe, no gradient to it).
* ``ObjectNet`` (a U-Net), base = 16 * n_filters_scale: an encoder of three conv blocks (3C -> base -> 2 base ->
  4 base), each followed by 2x average pooling, whose outputs before pooling are kept as skips; then two decoders
  (amplitude, phase) that at each level upsample 2x (nearest), concatenate the skip of the same resolution
  (deepest first) and apply a block: (4b + 4b -> 2b), (2b + 2b -> b), (b + b -> b); a 3x3 head conv gives C
  channels. A block is two 3x3 'same' convs with ReLU.
* object patches O = a exp(i phi) with a = the configured activation and phi = pi * tanh of the decoder heads.

The physics (overlap constraint, probe, far field) works on (B, C, N, N) like the torch side.

``PtychoPINN.call([X * intensity_scale, local_offsets])`` is the legacy inference signature that Ptychodus uses
with ``model.predict``: it divides by the model's intensity scale, predicts (through ``network_input``), applies
the overlap constraint, and returns complex patches (B, N, N, C).

Weights of bundles written before the physics-aware input and the skips (a plain encoder-decoder on the
amplitudes) have other shapes and no longer load; ``model_manager.load_tf_bundle`` says so and asks for retraining.
"""

from __future__ import annotations

import math
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from ptycho.config.config import ModelConfig
from ptycho.tf.helper import backpropagated_object, far_field_amplitude, overlap_constraint

__all__ = ["ObjectNet", "PtychoPINN", "MODEL_NAME", "INPUT_PLANES", "network_input", "build_model"]

MODEL_NAME = "autoencoder"
#: Input planes per pattern: the measured amplitude and the real and imaginary parts of its back-propagation.
INPUT_PLANES = 3
_ACTIVATIONS = {
    "sigmoid": tf.sigmoid,
    "swish": tf.nn.silu,
    "silu": tf.nn.silu,
    "softplus": tf.nn.softplus,
    "relu": tf.nn.relu,
}


def _conv(filters: int, c_in: int, name: str) -> keras.layers.Conv2D:
    """3x3 'same' conv initialised like torch's Conv2d default: U(±1/sqrt(fan_in)) for kernel and bias."""
    limit = 1.0 / math.sqrt(9 * c_in)
    return keras.layers.Conv2D(
        filters, 3, padding="same", name=name,
        kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
        bias_initializer=keras.initializers.RandomUniform(-limit, limit),
    )


class _Block(keras.layers.Layer):
    def __init__(self, c_in: int, c_out: int, name: str) -> None:
        super().__init__(name=name)
        self.conv1 = _conv(c_out, c_in, "conv1")
        self.conv2 = _conv(c_out, c_out, "conv2")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(self.conv2(tf.nn.relu(self.conv1(x))))


def _upsample(x: tf.Tensor) -> tf.Tensor:
    return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)  # nearest, like nn.Upsample(scale_factor=2)


class _Decoder(keras.layers.Layer):
    """Upsampling path that concatenates the encoder's feature map of the same resolution at every level (U-Net)."""

    def __init__(self, widths: list[int], out_channels: int, name: str) -> None:
        super().__init__(name=name)
        outs = widths[1:] + widths[-1:]
        self.blocks = [_Block(c_in + skip, c_out, f"block{i}")
                       for i, (c_in, skip, c_out) in enumerate(zip(widths, widths, outs))]
        self.head = _conv(out_channels, widths[-1], "head")

    def call(self, x: tf.Tensor, skips: list[tf.Tensor]) -> tf.Tensor:
        for block, skip in zip(self.blocks, skips):
            x = block(tf.concat([_upsample(x), skip], axis=-1))
        return self.head(x)


class ObjectNet(keras.layers.Layer):
    """Network inputs (B, N, N, INPUT_PLANES * C) -> object amplitude and phase (B, N, N, C) each.

    Encoder of three conv blocks with 2x average pooling, then two decoders (amplitude, phase) with skip
    connections from the encoder levels of matching resolution.
    """

    def __init__(self, channels: int, n_filters_scale: int = 2, amp_activation: str = "sigmoid",
                 name: str = "object_net") -> None:
        super().__init__(name=name)
        base = 16 * n_filters_scale
        widths = [base, 2 * base, 4 * base]
        self.encoder = []
        c_in = INPUT_PLANES * channels
        for i, width in enumerate(widths):
            self.encoder.append(_Block(c_in, width, f"enc{i}"))
            c_in = width
        up_widths = widths[::-1]
        self.amplitude = _Decoder(up_widths, channels, "amplitude")
        self.phase = _Decoder(up_widths, channels, "phase")
        self.amp_activation = _ACTIVATIONS[amp_activation]

    def call(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = tf.nn.avg_pool2d(x, 2, 2, "VALID")
        skips.reverse()
        amplitude = self.amp_activation(self.amplitude(x, skips))
        phase = math.pi * tf.tanh(self.phase(x, skips))
        return amplitude, phase


def network_input(diffraction: tf.Tensor, probe: tf.Tensor) -> tf.Tensor:
    """(B, N, N, C) amplitudes -> (B, N, N, 3C): amplitudes, then Re and Im of the back-propagated object estimate.

    Channels-last mirror of ``ptycho_torch.model.network_input`` (same plane order, so channel k of the torch
    input is channel k here); no gradient flows into the probe through this estimate.
    """
    diffraction = tf.cast(diffraction, tf.float32)
    estimate = backpropagated_object(tf.transpose(diffraction, [0, 3, 1, 2]), tf.stop_gradient(probe))
    estimate = tf.transpose(estimate, [0, 2, 3, 1])
    return tf.concat([diffraction, tf.math.real(estimate), tf.math.imag(estimate)], axis=-1)


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).astype(np.float32)


def _smooth(images: tf.Tensor, kernel: np.ndarray) -> tf.Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflected borders."""
    shape = tf.shape(images)
    r = kernel.size // 2
    x = tf.reshape(images, [-1, shape[2], shape[3], 1])
    x = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
    x = tf.nn.conv2d(x, tf.constant(kernel.reshape(1, -1, 1, 1)), 1, "VALID")
    x = tf.nn.conv2d(x, tf.constant(kernel.reshape(-1, 1, 1, 1)), 1, "VALID")
    return tf.reshape(x, shape)


class PtychoPINN(keras.Model):
    """Network + physics; the normalised probe and the log intensity scale are weights that travel with the bundle."""

    def __init__(self, config: ModelConfig, probe: np.ndarray, intensity_scale: float,
                 probe_mask: Optional[np.ndarray] = None, probe_trainable: bool = False,
                 intensity_scale_trainable: bool = True) -> None:
        """``probe`` is already normalised (ptycho.normalisation.normalize_probe)."""
        super().__init__(name="ptycho_pinn")
        self.config = config
        N = config.N
        if N not in (64, 128, 256):
            raise ValueError(f"ModelConfig.N must be set to the pattern size before building the model, got {N}")
        C = config.gridsize ** 2
        self.channels = C
        self.net = ObjectNet(C, config.n_filters_scale, config.amp_activation)
        probe = np.asarray(probe, np.complex64)
        self.probe_real = self.add_weight(shape=(N, N), name="probe_real", trainable=probe_trainable,
                                          initializer=keras.initializers.Constant(probe.real))
        self.probe_imag = self.add_weight(shape=(N, N), name="probe_imag", trainable=probe_trainable,
                                          initializer=keras.initializers.Constant(probe.imag))
        mask = np.ones((N, N), np.float32) if probe_mask is None else np.asarray(probe_mask, np.float32)
        self.probe_mask = self.add_weight(shape=(N, N), name="probe_mask", trainable=False,
                                          initializer=keras.initializers.Constant(mask))
        self.log_intensity_scale = self.add_weight(
            shape=(), name="log_intensity_scale", trainable=intensity_scale_trainable,
            initializer=keras.initializers.Constant(math.log(intensity_scale)))
        object_mask = np.ones((N, N), np.float32)
        if config.pad_object and not config.probe_big:
            object_mask[:] = 0
            object_mask[N // 4: N - N // 4, N // 4: N - N // 4] = 1
        self.object_mask = tf.constant(object_mask)
        sigma = config.gaussian_smoothing_sigma
        self.smoothing_kernel = _gaussian_kernel(sigma) if sigma > 0 else None

    @property
    def probe(self) -> tf.Tensor:
        return tf.complex(self.probe_real * self.probe_mask, self.probe_imag * self.probe_mask)

    @property
    def intensity_scale(self) -> tf.Tensor:
        return tf.exp(self.log_intensity_scale)

    def predict_object(self, diffraction: tf.Tensor) -> tf.Tensor:
        """Complex patches (B, C, N, N) from normalised amplitudes (B, N, N, C), before the overlap constraint."""
        amplitude, phase = self.net(network_input(diffraction, self.probe))
        amplitude = tf.transpose(amplitude, [0, 3, 1, 2])
        phase = tf.transpose(phase, [0, 3, 1, 2])
        if self.smoothing_kernel is not None:
            amplitude, phase = _smooth(amplitude, self.smoothing_kernel), _smooth(phase, self.smoothing_kernel)
        amplitude = amplitude * self.object_mask
        return tf.complex(amplitude * tf.cos(phase), amplitude * tf.sin(phase))

    def object_patches(self, diffraction: tf.Tensor, offsets_xy: Optional[tf.Tensor] = None) -> tf.Tensor:
        """Object patches (B, C, N, N) with the overlap constraint applied when ``object_big``."""
        obj = self.predict_object(diffraction)
        if self.config.object_big and offsets_xy is not None and self.channels > 1:
            obj = overlap_constraint(obj, offsets_xy)
        return obj

    def forward(self, diffraction: tf.Tensor, offsets_xy: Optional[tf.Tensor] = None
                ) -> tuple[tf.Tensor, tf.Tensor]:
        """(object patches, predicted far-field amplitudes), both (B, C, N, N), from normalised amplitudes."""
        obj = self.object_patches(diffraction, offsets_xy)
        return obj, far_field_amplitude(obj * self.probe)

    def call(self, inputs: list, training: bool = False) -> tf.Tensor:
        """Legacy inference: ``[X * intensity_scale (B, N, N, C), local_offsets (B, 1, 2, C)]`` -> (B, N, N, C)."""
        scaled, offsets = inputs
        diffraction = tf.cast(scaled, tf.float32) / self.intensity_scale
        offsets = tf.cast(offsets, tf.float32)
        if len(offsets.shape) == 4:  # (B, 1, 2, C) -> (B, C, 2)
            offsets = tf.transpose(offsets[:, 0], [0, 2, 1])
        obj = self.object_patches(diffraction, offsets)
        return tf.transpose(obj, [0, 2, 3, 1])


    def predict(self, x, batch_size=None, verbose=0, **kwargs):  # noqa: D102 - quiet by default (Ptychodus' logs)
        return super().predict(x, batch_size=batch_size, verbose=verbose, **kwargs)


def build_model(config: ModelConfig, probe: np.ndarray, intensity_scale: float, **kwargs) -> PtychoPINN:
    """Construct and build (create every weight) with a dummy batch, so weights can be saved or loaded at once."""
    model = PtychoPINN(config, probe, intensity_scale, **kwargs)
    C, N = config.gridsize ** 2, config.N
    model([np.zeros((1, N, N, C), np.float32), np.zeros((1, 1, 2, C), np.float32)])
    return model

