"""The TensorFlow ``Backend`` (see ``ptycho.backends``): single process, no physics refinement."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from ptycho.backends import TrainingHooks
from ptycho.config.config import PyTorchExecutionConfig
from ptycho.data_contract import ScanData
from ptycho.reconstruction import Reconstruction

__all__ = ["TensorFlowBackend", "BACKEND"]


class TensorFlowBackend:
    name = "tensorflow"

    def train(self, payload: Any, train: ScanData, test: Optional[ScanData],
              hooks: Optional[TrainingHooks] = None, write_bundle: bool = True) -> dict[str, Any]:
        """Keras training loop on one process; the launcher's hooks (cluster plugins, resume) do not apply."""
        from ptycho.tf.bundle import save
        from ptycho.tf.training import train_cdi_model_tf

        cfg = payload.tf_training_config
        results = train_cdi_model_tf(train, test, cfg, payload.execution_config)
        results["bundle_path"] = save(cfg.output_dir) if write_bundle else None
        results["is_global_zero"] = True
        return results

    def load(self, model_path: Union[str, Path]) -> tuple[Any, dict[str, Any]]:
        from ptycho.tf.bundle import load_tf_bundle

        return load_tf_bundle(model_path)

    def reconstruct(self, model: Any, scan: ScanData, execution: PyTorchExecutionConfig, *,
                    neighbor_count: int = 4, n_groups: Optional[int] = None,
                    progress: Optional[bool] = None) -> Reconstruction:
        from ptycho.tf.inference import reconstruct_scan_tf

        return reconstruct_scan_tf(model, scan, execution, neighbor_count=neighbor_count, n_groups=n_groups,
                                   progress=progress)


BACKEND = TensorFlowBackend()
