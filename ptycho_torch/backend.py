"""The PyTorch ``Backend`` (see ``ptycho.backends``): Lightning training on one or many processes, inference with
optional physics refinement."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from ptycho.backends import TrainingHooks
from ptycho.config.config import PyTorchExecutionConfig
from ptycho.data_contract import ScanData
from ptycho.reconstruction import Reconstruction

__all__ = ["TorchBackend", "BACKEND"]


class TorchBackend:
    name = "pytorch"

    def train(self, payload: Any, train: ScanData, test: Optional[ScanData],
              hooks: Optional[TrainingHooks] = None, write_bundle: bool = True) -> dict[str, Any]:
        from ptycho_torch.workflows.components import train_cdi_model_torch

        hooks = hooks or TrainingHooks()
        results = train_cdi_model_torch(train, test, payload, plugins=hooks.plugins, callbacks=hooks.callbacks,
                                        ckpt_path=hooks.ckpt_path, write_bundle=write_bundle)
        results["is_global_zero"] = bool(results["trainer"].is_global_zero)
        return results

    def load(self, model_path: Union[str, Path]) -> tuple[Any, dict[str, Any]]:
        from ptycho_torch.bundle import load_torch_bundle

        return load_torch_bundle(model_path)

    def reconstruct(self, model: Any, scan: ScanData, execution: PyTorchExecutionConfig, *,
                    neighbor_count: int = 4, n_groups: Optional[int] = None,
                    progress: Optional[bool] = None) -> Reconstruction:
        from ptycho_torch.inference import reconstruct_scan

        return reconstruct_scan(model, scan, execution, neighbor_count=neighbor_count, n_groups=n_groups,
                                progress=progress)


BACKEND = TorchBackend()
