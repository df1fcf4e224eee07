"""Drive Ptychodus 1.7.0's PtychoPINN-Torch reconstructors headless against this package (Ptychodus venv's python).

    python tests/ptychodus_torch_driver.py WORKDIR [--epochs 8]

Simulates scans with our simulator and writes them as Ptychodus' own files (``ptychodus_driver.write_ptychodus_files``);
the held-out scan's initial object is flat and sized and centred as Ptychodus sizes one
(``ptychodus.api.object.compute_object_geometry``). Through Ptychodus' workflow API it then exports the training
NPZ, trains ``ptychopinn-torch_unsupervised`` (Ptychodus' default device 'cuda', on a CPU machine), loads the saved
``.ckpt`` with ``load_model_from_file``, reconstructs, and trains ``ptychopinn-torch_supervised`` on a scan whose
object is the truth. WORKDIR/result.json gets the loss curves Ptychodus received, shapes and honest metrics against
the truth; WORKDIR/batch/ is prepared for ``ptychodus -b reconstruct`` (model.ckpt).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
from pathlib import Path

import h5py
import numpy as np

from ptychodus_driver import N, OBJECT_PIXEL_M, quality, write_ptychodus_files

UNSUPERVISED = "ptychopinn-torch_unsupervised"
SUPERVISED = "ptychopinn-torch_supervised"

SETTINGS = """[Processing]
Algorithm = {algorithm}

[PtychoPINNTorchData]
model_size = {N}
num_channels = 1
grid_size_x = 1
grid_size_y = 1
coordinate_subsampling_factor = 1
num_nearest_neighbors_for_lookup = 4

[PtychoPINNTorchModel]
num_filters_scale = 1

[PtychoPINNTorchTraining]
epochs = {epochs}
batch_size = {batch_size}
num_dataloader_workers = 0

[PtychoPINNTorchInference]
batch_size = 64
"""


def ptychodus_object_grid(folder: Path, truth_object: bool = False) -> dict:
    """Rewrite product.h5's object as Ptychodus sizes one for its scan (flat), or as the truth itself."""
    from ptychodus.api.object import compute_object_geometry
    from ptychodus.api.probe import ProbeGeometry
    from ptychodus.api.probe_positions import ProbePosition

    with h5py.File(folder / "product.h5", "r+") as h5:
        xs, ys = h5["probe_position_x_m"][()], h5["probe_position_y_m"][()]
        if truth_object:
            array = np.load(folder / "truth.npy")[None].astype(np.complex64)
            cx = cy = 0.0
        else:
            geometry = compute_object_geometry([ProbePosition(i, x, y) for i, (x, y) in enumerate(zip(xs, ys))],
                                               ProbeGeometry(N, N, OBJECT_PIXEL_M, OBJECT_PIXEL_M))
            array = np.ones((1, geometry.height_px, geometry.width_px), np.complex64)
            cx, cy = geometry.center_x_m, geometry.center_y_m
        del h5["object"]
        obj = h5.create_dataset("object", data=array)
        obj.attrs.update(pixel_width_m=OBJECT_PIXEL_M, pixel_height_m=OBJECT_PIXEL_M, center_x_m=cx, center_y_m=cy)
    return {"shape": list(array.shape[1:]), "center_m": [cy, cx]}


def on_truth_grid(saved_product: Path, truth: np.ndarray) -> np.ndarray:
    """The reconstruction resampled onto the truth's pixels, using only Ptychodus' geometry of the saved product
    (its object's centre and pixel size), so a wrongly placed object scores badly."""
    from ptycho.metrics import shift_image

    with h5py.File(saved_product, "r") as h5:
        obj = np.squeeze(h5["object"][()]).astype(np.complex64)
        attrs = h5["object"].attrs
        centre = (float(attrs["center_y_m"]), float(attrs["center_x_m"]))
    h, w = truth.shape
    # truth pixel p sits at (p - (size - 1) / 2) * pixel metres (ptychodus_driver); the object's pixel q at
    # (q - (size' - 1) / 2) * pixel + centre: q = p + d.
    d = [(c / OBJECT_PIXEL_M) + (s_out - 1) / 2 - (s - 1) / 2 for c, s_out, s in zip(centre, obj.shape, (h, w))]
    whole = [math.floor(v) for v in d]
    moved = shift_image(obj, (-(d[0] - whole[0]), -(d[1] - whole[1])))
    out = np.zeros((h, w), np.complex64)
    for r in range(h):
        q = r + whole[0]
        if 0 <= q < obj.shape[0]:
            lo, hi = max(0, -whole[1]), min(w, obj.shape[1] - whole[1])
            out[r, lo:hi] = moved[q, lo + whole[1]:hi + whole[1]]
    return out


def record_train_outputs(received: list) -> None:
    """Keep every TrainOutput Ptychodus' parent receives from the training child (its loss curves)."""
    from ptychodus.model.processing import subprocess_reconstructor as sr

    original = sr.SubprocessReconstructor.train

    def train(self, input_path, output_path):  # noqa: ANN001, ANN202 - same signature as Ptychodus'
        for output in original(self, input_path, output_path):
            received.append({"training_loss": [float(v.value) for v in output.training_loss],
                             "validation_loss": [float(v.value) for v in output.validation_loss],
                             "progress": output.progress})
            yield output

    sr.SubprocessReconstructor.train = train


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--n_train", type=int, default=48)
    parser.add_argument("--n_test", type=int, default=36)
    parser.add_argument("--n_supervised", type=int, default=16)
    args = parser.parse_args()
    work = args.workdir.resolve()
    write_ptychodus_files(work / "train", seed=1, n_positions=args.n_train)
    test_info = write_ptychodus_files(work / "test", seed=2, n_positions=args.n_test)
    write_ptychodus_files(work / "train_sup", seed=3, n_positions=args.n_supervised)
    result: dict = {"input_object": ptychodus_object_grid(work / "test")}
    ptychodus_object_grid(work / "train_sup", truth_object=True)
    settings = work / "settings.ini"
    settings.write_text(SETTINGS.format(algorithm=UNSUPERVISED, N=N, epochs=args.epochs, batch_size=args.batch_size))
    received: list = []
    record_train_outputs(received)

    from ptychodus.model import ModelCore

    with ModelCore(settings, log_level=logging.INFO) as core:
        workflow, processing = core.workflow_api, core.processing_core.processing_api
        result["reconstructors"] = sorted(workflow.available_reconstructors())
        for name in (UNSUPERVISED, SUPERVISED):
            if name not in result["reconstructors"]:
                raise SystemExit(f"{name} not registered: {result['reconstructors']}")
        products = {}
        for name in ("train", "test", "train_sup"):
            diffraction = workflow.load_assembled_diffraction_data(work / name / "diffraction.h5")
            products[name] = workflow.load_product(work / name / "product.h5", diffraction=diffraction)

        in_dir, out_dir = work / "in", work / "out"
        in_dir.mkdir()
        products["train"].export_training_data(in_dir / "train_data.npz", algorithm=UNSUPERVISED)
        products["train"].train_reconstructor_local(in_dir, out_dir, algorithm=UNSUPERVISED, block=True)
        result["unsupervised_training"] = received[-1] if received else None
        checkpoints = sorted(p for p in out_dir.glob("run_*/checkpoints/*.ckpt") if p.name != "last.ckpt")
        result["checkpoints"] = [str(p.relative_to(out_dir)) for p in checkpoints]
        result["bundle_written"] = bool(list(out_dir.glob("run_*/wts.h5.zip")))
        model_file = checkpoints[-1]
        processing.load_model_from_file(model_file, algorithm=UNSUPERVISED)
        output = products["test"].reconstruct_local(algorithm=UNSUPERVISED, block=True,
                                                    output_product_file=work / "reconstructed.h5")
        output.save_product(work / "reconstructed_saved.h5")

        sup_in, sup_out = work / "in_sup", work / "out_sup"
        sup_in.mkdir()
        products["train_sup"].export_training_data(sup_in / "train_data.npz", algorithm=SUPERVISED)
        received.clear()
        products["train_sup"].train_reconstructor_local(sup_in, sup_out, algorithm=SUPERVISED, block=True)
        result["supervised_training"] = received[-1] if received else None
        result["supervised_checkpoints"] = len(list(sup_out.glob("run_*/checkpoints/*.ckpt")))

    with h5py.File(work / "reconstructed_saved.h5", "r") as h5:
        obj = np.squeeze(h5["object"][()])
    result["object"] = {"shape": list(obj.shape), "dtype": str(obj.dtype), "finite": bool(np.isfinite(obj).all()),
                        "complex": bool(np.iscomplexobj(obj))}
    result["quality"] = quality(on_truth_grid(work / "reconstructed_saved.h5", test_info["truth"]), test_info,
                                initial=np.ones_like(test_info["truth"]))

    batch = work / "batch"
    batch.mkdir()
    for name in ("diffraction.h5", "product.h5"):
        shutil.copy(work / "test" / name, batch / name)
    shutil.copy(model_file, batch / "model.ckpt")
    shutil.copy(settings, batch / "settings.ini")
    (work / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
