"""PtychoPINN network: shapes for every supported N and gridsize, output ranges, activations, masks, trainability."""

from __future__ import annotations

import math

import pytest
import torch

from ptycho.config.config import AMP_ACTIVATIONS, ModelConfig
from ptycho.simulate import make_probe
from ptycho_torch.model import INPUT_PLANES, ObjectNet, PtychoPINN
from ptycho_torch.physics import normalize_probe

torch.set_num_threads(1)


def _probe(N: int) -> torch.Tensor:
    return normalize_probe(torch.from_numpy(make_probe(N)), 4.0)


def _model(N: int = 64, gridsize: int = 1, **kwargs) -> PtychoPINN:
    trainable = {k: kwargs.pop(k) for k in ("probe_trainable", "intensity_scale_trainable") if k in kwargs}
    config = ModelConfig(N=N, gridsize=gridsize, n_filters_scale=1, **kwargs)
    torch.manual_seed(0)
    return PtychoPINN(config, _probe(N), intensity_scale=100.0, **trainable)


def _inputs(batch: int, C: int, N: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    diffraction = torch.rand(batch, C, N, N, generator=g)
    offsets = 4.0 * torch.randn(batch, C, 2, generator=g)
    offsets -= offsets.mean(dim=1, keepdim=True)
    return diffraction, offsets


# N=256 runs once (gridsize 2, batch 1) to keep the suite fast on 2 cores
@pytest.mark.parametrize("N,gridsize,batch", [(64, 1, 3), (64, 2, 2), (128, 1, 2), (128, 2, 1), (256, 2, 1)])
def test_forward_shapes(N, gridsize, batch):
    C = gridsize ** 2
    model = _model(N, gridsize).eval()
    diffraction, offsets = _inputs(batch, C, N)
    with torch.no_grad():
        obj, predicted = model(diffraction, offsets if C > 1 else None)
    assert obj.shape == (batch, C, N, N) and obj.dtype == torch.complex64
    assert predicted.shape == (batch, C, N, N) and not predicted.is_complex()
    assert torch.isfinite(predicted).all() and torch.all(predicted >= 0)
    assert model.probe.shape == (N, N)


def test_sigmoid_amplitude_and_phase_ranges():
    net = ObjectNet(channels=4, n_filters_scale=1, amp_activation="sigmoid")
    x = 10 * torch.randn(2, 4 * INPUT_PLANES, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        amplitude, phase = net(x)
    assert amplitude.shape == phase.shape == (2, 4, 64, 64)
    assert torch.all(amplitude > 0) and torch.all(amplitude < 1)
    assert torch.all(phase >= -math.pi) and torch.all(phase <= math.pi)


def test_object_patches_carry_amplitude_and_phase_ranges():
    model = _model(64, 2).eval()
    diffraction, offsets = _inputs(2, 4, 64)
    with torch.no_grad():
        obj = model.predict_object(diffraction)
    assert torch.all(obj.abs() < 1)
    assert torch.all(obj.angle().abs() <= math.pi + 1e-6)


@pytest.mark.parametrize("activation", AMP_ACTIVATIONS)
def test_each_amp_activation_builds_and_runs(activation):
    model = _model(64, 1, amp_activation=activation)
    diffraction, _ = _inputs(1, 1, 64)
    obj, predicted = model(diffraction)
    assert torch.all(obj.abs() >= 0) and torch.isfinite(predicted).all()
    predicted.sum().backward()  # the graph reaches the network's weights
    assert any(p.grad is not None for p in model.net.parameters())


def test_pad_object_without_probe_big_zeroes_the_outer_region():
    N = 64
    model = _model(N, 1, pad_object=True, probe_big=False).eval()
    with torch.no_grad():
        obj = model.predict_object(_inputs(2, 1, N)[0])
    q = N // 4
    inner = obj[..., q:N - q, q:N - q]
    assert torch.all(inner.abs() > 0)
    outer = obj.abs().clone()
    outer[..., q:N - q, q:N - q] = 0
    assert torch.all(outer == 0)
    # the mask is a persistent buffer: it travels with the bundle's state_dict
    assert "object_mask" in model.state_dict()


@pytest.mark.parametrize("pad_object,probe_big", [(True, True), (False, False), (False, True)])
def test_object_is_not_masked_otherwise(pad_object, probe_big):
    model = _model(64, 1, pad_object=pad_object, probe_big=probe_big)
    assert torch.all(model.object_mask == 1)


@pytest.mark.parametrize("probe_trainable", [False, True])
@pytest.mark.parametrize("scale_trainable", [False, True])
def test_probe_and_intensity_scale_trainability(probe_trainable, scale_trainable):
    model = _model(64, 1, probe_trainable=probe_trainable, intensity_scale_trainable=scale_trainable)
    assert model.probe_real.requires_grad is probe_trainable
    assert model.probe_imag.requires_grad is probe_trainable
    assert model.log_intensity_scale.requires_grad is scale_trainable
    assert float(model.intensity_scale.detach()) == pytest.approx(100.0, rel=1e-6)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert ("probe_real" in trainable) is probe_trainable
    assert ("log_intensity_scale" in trainable) is scale_trainable
    assert any(name.startswith("net.") for name in trainable)


def test_probe_mask_zeroes_the_probe():
    N = 64
    mask = torch.zeros(N, N)
    mask[16:48, 16:48] = 1
    model = PtychoPINN(ModelConfig(N=N, n_filters_scale=1), _probe(N), 1.0, probe_mask=mask)
    assert torch.all(model.probe[mask == 0] == 0)
    assert torch.equal(model.probe[mask == 1], _probe(N).to(torch.complex64)[mask == 1])


def test_gridsize_two_applies_overlap_constraint_only_with_offsets_and_object_big():
    N = 64
    diffraction, offsets = _inputs(1, 4, N)
    big = _model(N, 2, object_big=True).eval()
    small = _model(N, 2, object_big=False).eval()
    with torch.no_grad():
        raw = big.predict_object(diffraction)
        assert not torch.allclose(big.object_patches(diffraction, offsets), raw)
        assert torch.equal(big.object_patches(diffraction, None), raw)
        assert torch.equal(small.object_patches(diffraction, offsets), small.predict_object(diffraction))


def test_gaussian_smoothing_sigma_low_passes_the_object():
    import torch

    from ptycho.config.config import ModelConfig
    from ptycho_torch.model import PtychoPINN

    torch.manual_seed(0)
    probe = torch.ones(64, 64, dtype=torch.complex64)
    sharp = PtychoPINN(ModelConfig(n_filters_scale=1), probe, 1.0)
    smooth = PtychoPINN(ModelConfig(n_filters_scale=1, gaussian_smoothing_sigma=2.0), probe, 1.0)
    smooth.load_state_dict(sharp.state_dict())
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        a, b = sharp.predict_object(x), smooth.predict_object(x)
    roughness = lambda o: (o.abs()[..., 1:] - o.abs()[..., :-1]).abs().mean()  # noqa: E731
    assert roughness(b) < 0.5 * roughness(a)
    assert b.shape == a.shape


def test_physics_layers_are_learned_parts_of_the_network():
    plain = _model(64, 2)
    layered = _model(64, 2, physics_steps=2)
    extra = {k for k in layered.state_dict()} - {k for k in plain.state_dict()}
    assert "physics_step_sizes" in extra and any(k.startswith("physics_priors.1.") for k in extra)
    diffraction, offsets = _inputs(2, 4, 64)
    with torch.no_grad():
        layered.net.load_state_dict(plain.net.state_dict())
        before, _ = plain(diffraction, offsets)
        after, predicted = layered(diffraction, offsets)
    assert torch.isfinite(after.abs()).all() and torch.isfinite(predicted).all()
    assert float((after - before).abs().mean()) > 1e-3  # the layers move the network's output
    obj, predicted = layered(diffraction, offsets)
    predicted.sum().backward()
    assert layered.physics_step_sizes.grad is not None
    assert all(p.grad is not None for p in layered.physics_priors.parameters())
    with pytest.raises(ValueError, match="physics_steps"):
        ModelConfig(physics_steps=-1)
