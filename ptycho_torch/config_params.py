"""Torch-side configuration dataclasses.

Two kinds of caller build these: our config factory (``config_factory``: the fields at the top of each class, its
historical names and defaults) and clients of the upstream ``ptycho_torch`` API, chiefly Ptychodus 1.7.0's
``PtychoPINN-Torch`` reconstructors, which pass some ninety keyword fields and pickle the objects to a child process.
Every field either side passes is accepted. They are plain picklable dataclasses; ``TrainingConfig`` is assignable
because Ptychodus sets ``n_devices`` after construction.

What each field does here, and which ones only log a notice, is decided in one place: ``config_bridge``
(``to_training_config`` etc. for the factory, ``api_run_settings`` for the upstream API). The defaults of the API
fields are *neutral*: the value under which our model behaves as documented; a different value of a field we do not
implement is named in one log line (docs/workflows/ptychodus.md lists them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["DataConfig", "ModelConfig", "TrainingConfig", "InferenceConfig", "DatagenConfig",
           "TORCH_DEFAULT_NPHOTONS"]

#: The torch backend's historical photon default; the canonical default is 1e9 (the bridge warns on the difference).
TORCH_DEFAULT_NPHOTONS = 1e5


@dataclass(frozen=True)
class DataConfig:
    """How a scan is cut into training samples.

    ``C`` (patterns per group) follows from ``grid_size`` (rows x cols); given explicitly (Ptychodus passes it) it
    must agree. ``n_subsample``: to the factory, the number of scan positions the groups are drawn from; to the
    upstream API (Ptychodus' ``coordinate_subsampling_factor``), the number of groups each scan position seeds.
    """

    N: int = 64
    grid_size: tuple[int, int] = (1, 1)
    K: int = 4
    nphotons: float = TORCH_DEFAULT_NPHOTONS
    probe_scale: float = 4.0
    n_subsample: Optional[int] = None
    subsample_seed: Optional[int] = None
    sequential_sampling: bool = False
    probe_mask: bool = False
    positions_provided: bool = True
    # --- upstream API fields (Ptychodus' PtychoPINNTorchData settings) -------------------------------------------
    C: Optional[int] = None
    normalize: str = "Batch"
    neighbor_function: str = "Nearest"
    scan_pattern: str = "Isotropic"
    probe_normalize: bool = True
    x_bounds: tuple[float, float] = (0.1, 0.9)
    y_bounds: tuple[float, float] = (0.1, 0.9)
    min_neighbor_distance: float = 0.0
    max_neighbor_distance: float = 3.0
    K_quadrant: int = 30
    probe_ramp_removal: bool = False
    data_scaling: str = "Parseval"
    phase_subtraction: bool = False

    def __post_init__(self) -> None:
        channels = int(self.grid_size[0]) * int(self.grid_size[1])
        if self.C is None:
            object.__setattr__(self, "C", channels)
        elif self.C != channels:
            raise ValueError(f"DataConfig.C={self.C} contradicts grid_size={tuple(self.grid_size)}: a group holds "
                             f"rows x cols = {channels} patterns")


@dataclass(frozen=True)
class ModelConfig:
    """Network and physics switches. ``mode`` is 'Unsupervised' (physics loss) or 'Supervised'."""

    mode: str = "Unsupervised"
    amp_activation: str = "sigmoid"
    n_filters_scale: int = 2
    C_model: int = 1
    C_forward: int = 1
    object_big: bool = True
    probe_big: bool = True
    pad_object: bool = True
    probe_trainable: bool = False
    intensity_scale_trainable: bool = True
    gaussian_smoothing_sigma: float = 0.0
    #: Physics layers after the network (canonical ModelConfig.physics_steps); Ptychodus leaves it at 0.
    physics_steps: int = 0
    #: Zero the probe outside its support; Ptychodus passes None (= False).
    probe_mask: Optional[bool] = None
    # --- upstream API fields (Ptychodus' PtychoPINNTorchModel settings) ------------------------------------------
    loss_function: str = "Poisson"
    cbam_encoder: bool = False
    cbam_bottleneck: bool = False
    cbam_decoder: bool = False
    eca_encoder: bool = False
    eca_decoder: bool = False
    spatial_decoder: bool = False
    decoder_spatial_kernel: int = 7
    decoder_last_amp_channels: Optional[int] = None
    decoder_last_c_outer_fraction: float = 0.125
    use_shared_decoder: bool = False
    batch_norm: bool = False
    edge_pad: int = 10
    offset: int = 6
    intensity_scale: float = 10000.0
    max_position_jitter: int = 0
    num_datasets: int = 1
    amp_loss: Optional[str] = None
    phase_loss: Optional[str] = None
    amp_loss_coeff: float = 1.0
    phase_loss_coeff: float = 1.0
    probe_reference_coeff: float = 0.0
    amplitude_variance_loss: bool = False
    amplitude_variance_coeff: float = 0.01


@dataclass
class TrainingConfig:
    """Optimisation schedule and loss weights. ``nll`` switches the Poisson NLL on (weight 1) or off."""

    epochs: int = 50
    batch_size: int = 16
    n_groups: Optional[int] = None
    nll: bool = True
    mae_weight: float = 0.0
    realspace_mae_weight: float = 0.0
    realspace_weight: float = 0.0
    # --- upstream API fields (Ptychodus' PtychoPINNTorchTraining settings) ---------------------------------------
    learning_rate: float = 1e-3
    n_devices: int = 1
    num_workers: int = 0
    accum_steps: int = 1
    gradient_clip_val: Optional[float] = None
    device: str = "auto"
    strategy: str = "ddp_spawn"
    framework: str = "Lightning"
    orchestrator: str = "Lightning"
    scheduler: str = "Default"
    warmup_epochs: int = 0
    min_lr_ratio: float = 0.0
    notes: str = ""
    model_name: str = "PtychoPINNv2"
    epochs_fine_tune: int = 0
    fine_tune_gamma: float = 0.1
    enable_staged_finetuning: bool = False
    finetune_stage1_epochs: int = 7
    finetune_stage2_epochs: int = 7
    finetune_stage3_epochs: int = 5
    finetune_stage1_lr_decoder: float = 0.1
    finetune_stage2_lr_encoder_top: float = 0.01
    finetune_stage2_lr_decoder: float = 0.05
    finetune_stage2_lr_phase_head: float = 0.1
    finetune_stage3_lr_encoder_bottom: float = 0.005
    finetune_stage3_lr_encoder_top: float = 0.01
    finetune_stage3_lr_decoder: float = 0.02
    finetune_stage3_lr_phase_head: float = 0.05
    finetune_skip_stage3: bool = True
    finetune_early_stop_patience: int = 3
    finetune_val_split: float = 0.05


@dataclass(frozen=True)
class InferenceConfig:
    """Which positions of the test scan to reconstruct (None: all of them), and how patches are stitched."""

    n_groups: Optional[int] = None
    n_subsample: Optional[int] = None
    subsample_seed: Optional[int] = None
    K: int = 4
    debug: bool = False
    # --- upstream API fields (Ptychodus' PtychoPINNTorchInference settings) --------------------------------------
    batch_size: Optional[int] = None
    middle_trim: int = 32
    experiment_number: int = 0
    patch_weighting: str = "uniform"
    pad_eval: bool = True
    window: int = 20


@dataclass(frozen=True)
class DatagenConfig:
    """Simulation settings of the upstream API. Ptychodus passes ``DatagenConfig()``; training here never simulates
    (``ptycho-simulate`` does), so it carries only free-form ``extra`` settings, which are recorded, not used."""

    extra: Optional[dict[str, Any]] = None
