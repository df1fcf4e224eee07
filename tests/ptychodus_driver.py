"""Drive Ptychodus 1.7.0 headless against this package (run with the Ptychodus venv's python).

    python tests/ptychodus_driver.py WORKDIR [--nepochs 8]

Builds two small synthetic scans with our simulator and writes each as Ptychodus' own files (``diffraction.h5``:
raw integer counts; ``product.h5``: probe, positions in metres, a flat initial object), then, through Ptychodus'
workflow API: exports train_data.npz/test_data.npz, trains the ``ptychopinn_pinn`` reconstructor, loads the
model, reconstructs the held-out scan, and writes WORKDIR/result.json with shapes and quality numbers. It also
prepares WORKDIR/batch/ (diffraction.h5, product.h5, model.zip, settings.ini) for ``ptychodus -b reconstruct``.
Ptychodus spawns child processes, so everything runs under ``if __name__ == '__main__'``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import h5py
import numpy as np

N = 64
OBJECT_SIZE = 128
DETECTOR_PIXEL_M = 75e-6
DISTANCE_M = 2.0
ENERGY_EV = 10000.0
WAVELENGTH_M = 1.23984198e-6 / ENERGY_EV
OBJECT_PIXEL_M = WAVELENGTH_M * DISTANCE_M / (N * DETECTOR_PIXEL_M)


def write_ptychodus_files(folder: Path, seed: int, n_positions: int) -> dict:
    """Simulate a scan and write diffraction.h5 + product.h5 in the layout ptychodus.api.io reads."""
    from ptycho.simulate import simulate_scan

    scan = simulate_scan(N=N, object_size=OBJECT_SIZE, n_positions=n_positions, nphotons=1e6, seed=seed)
    scale = scan.metadata["physics_parameters"]["intensity_scale"]
    counts = np.round((scan.diffraction.astype(np.float64) * scale) ** 2)
    # Raw detector counts as an integer stack; uint16 would wrap the bright central pixels at 1e6 photons.
    counts = counts.astype(np.uint16 if counts.max() <= np.iinfo(np.uint16).max else np.uint32)
    folder.mkdir(parents=True, exist_ok=True)
    m = counts.shape[0]
    with h5py.File(folder / "diffraction.h5", "w") as h5:
        h5.create_dataset("indexes", data=np.arange(m, dtype=np.int64))
        patterns = h5.create_dataset("patterns", data=counts)
        patterns.attrs["detector_pixel_width_m"] = DETECTOR_PIXEL_M
        patterns.attrs["detector_pixel_height_m"] = DETECTOR_PIXEL_M
        h5.create_dataset("bad_pixels", data=np.zeros((N, N), dtype=bool))
    h, w = scan.object_guess.shape
    # Ptychodus maps metres to object pixels as (x_m - center_x_m) / pixel + (W - 1) / 2.
    x_m = (scan.xcoords - (w - 1) / 2) * OBJECT_PIXEL_M
    y_m = (scan.ycoords - (h - 1) / 2) * OBJECT_PIXEL_M
    initial = np.ones((1, h, w), np.complex64)  # flat initial guess
    with h5py.File(folder / "product.h5", "w") as h5:
        h5.attrs["name"] = f"synthetic-{seed}"
        h5.attrs["comments"] = "ptychopinn acceptance test"
        h5.attrs["detector_object_distance_m"] = DISTANCE_M
        h5.attrs["photon_energy_eV"] = ENERGY_EV
        h5.attrs["probe_photon_count"] = 1e6
        h5.attrs["exposure_time_s"] = 0.0
        h5.attrs["mass_attenuation_m2_per_kg"] = 0.0
        h5.attrs["tomography_angle_deg"] = 0.0
        h5.attrs["focus_object_distance_m"] = 0.0
        h5.attrs["tilt_angle_deg"] = 0.0
        h5.attrs["far_field"] = True
        h5.create_dataset("probe_position_indexes", data=np.arange(m, dtype=np.int64))
        h5.create_dataset("probe_position_x_m", data=x_m)
        h5.create_dataset("probe_position_y_m", data=y_m)
        probe = h5.create_dataset("probe", data=scan.probe[None].astype(np.complex64))  # (modes, N, N)
        probe.attrs["pixel_width_m"] = OBJECT_PIXEL_M
        probe.attrs["pixel_height_m"] = OBJECT_PIXEL_M
        obj = h5.create_dataset("object", data=initial)
        obj.attrs["pixel_width_m"] = OBJECT_PIXEL_M
        obj.attrs["pixel_height_m"] = OBJECT_PIXEL_M
        obj.attrs["center_x_m"] = 0.0
        obj.attrs["center_y_m"] = 0.0
    np.save(folder / "truth.npy", scan.object_guess)
    return {"xcoords": scan.xcoords, "ycoords": scan.ycoords, "truth": scan.object_guess, "initial": initial[0]}


def quality(obj: np.ndarray, info: dict, initial: np.ndarray | None = None) -> dict:
    """Honest metrics of ``obj`` and of the initial guess (``info["initial"]`` unless ``initial`` is given)."""
    from ptycho.metrics import evaluate_reconstruction

    out = {}
    for name, image in (("reconstruction", obj), ("initial_guess", info["initial"] if initial is None else initial)):
        m = evaluate_reconstruction(image, info["truth"], xcoords=info["xcoords"], ycoords=info["ycoords"], N=N)
        out[name] = {"amplitude_ssim": m["amplitude"]["ssim"], "phase_ssim": m["phase"]["ssim"],
                     "amplitude_psnr": m["amplitude"]["psnr"], "phase_psnr": m["phase"]["psnr"]}
    return out


SETTINGS = """[Processing]
Algorithm = ptychopinn_pinn

[PtychoPINNModel]
GridSize = 1
NumFiltersScale = 1

[PtychoPINNTraining]
NumEpochs = {nepochs}
BatchSize = {batch_size}
NumPhotons = 1000000.0

[PtychoPINNInference]
NumSamples = {nsamples}
NumNearestNeighbors = 7
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--nepochs", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--n_train", type=int, default=64)
    parser.add_argument("--n_test", type=int, default=36)
    args = parser.parse_args()
    work = args.workdir.resolve()
    train_info = write_ptychodus_files(work / "train", seed=1, n_positions=args.n_train)
    test_info = write_ptychodus_files(work / "test", seed=2, n_positions=args.n_test)
    settings = work / "settings.ini"
    settings.write_text(SETTINGS.format(nepochs=args.nepochs, batch_size=args.batch_size, nsamples=max(args.n_train, args.n_test)))

    from ptychodus.model import ModelCore

    in_dir, out_dir = work / "in", work / "out"
    in_dir.mkdir(exist_ok=True)
    result: dict = {}
    with ModelCore(settings, log_level=logging.INFO) as core:
        workflow = core.workflow_api
        result["reconstructors"] = sorted(workflow.available_reconstructors())
        if "ptychopinn_pinn" not in result["reconstructors"]:
            raise SystemExit(f"ptychopinn_pinn not registered: {result['reconstructors']}")
        train_diff = workflow.load_assembled_diffraction_data(work / "train" / "diffraction.h5")
        train_product = workflow.load_product(work / "train" / "product.h5", diffraction=train_diff)
        test_diff = workflow.load_assembled_diffraction_data(work / "test" / "diffraction.h5")
        test_product = workflow.load_product(work / "test" / "product.h5", diffraction=test_diff)
        train_product.export_training_data(in_dir / "train_data.npz", algorithm="ptychopinn_pinn")
        test_product.export_training_data(in_dir / "test_data.npz", algorithm="ptychopinn_pinn")
        with np.load(in_dir / "train_data.npz") as npz:
            result["exported"] = {"diff3d_dtype": str(npz["diff3d"].dtype), "probe_shape": list(npz["probeGuess"].shape),
                                  "x_error_px": float(np.abs(npz["xcoords"] - train_info["xcoords"]).max())}
        train_product.train_reconstructor_local(in_dir, out_dir, algorithm="ptychopinn_pinn", block=True)
        model_file = out_dir / "wts.h5.zip"
        result["model_written"] = model_file.is_file()
        core.processing_core.processing_api.load_model_from_file(model_file, algorithm="ptychopinn_pinn")
        output = test_product.reconstruct_local(algorithm="ptychopinn_pinn", block=True,
                                                output_product_file=work / "reconstructed.h5")
        output.save_product(work / "reconstructed_saved.h5")
    with h5py.File(work / "reconstructed_saved.h5", "r") as h5:
        obj = np.squeeze(h5["object"][()])
    result["object"] = {"shape": list(obj.shape), "dtype": str(obj.dtype), "finite": bool(np.isfinite(obj).all()),
                        "complex": bool(np.iscomplexobj(obj)), "expected_shape": list(test_info["truth"].shape)}
    result["quality"] = quality(obj.astype(np.complex64), test_info)

    batch = work / "batch"
    batch.mkdir(exist_ok=True)
    for name in ("diffraction.h5", "product.h5"):
        shutil.copy(work / "test" / name, batch / name)
    shutil.copy(model_file, batch / "model.zip")  # Ptychodus unpacks a model.zip into a folder for the child
    shutil.copy(settings, batch / "settings.ini")
    (work / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
