"""Acceptance: Ptychodus 1.7.0, installed in its own venv with this package, trains and reconstructs headless.

The venv lives in ``.venv-ptychodus`` at the repository root (gitignored) and is reused while it imports
ptychodus 1.7.0, this checkout's ``ptycho`` and TensorFlow; otherwise it is (re)built with
``pip install -c constraints.txt ptychodus==1.7.0 -e '.[tf]'`` (torch comes from the constraint pin, the local
CPU wheel). ``tests/ptychodus_driver.py`` runs Ptychodus' workflow API; then the batch CLI ``ptychodus -b
reconstruct`` reconstructs the same scan from a folder holding diffraction.h5, product.h5, model.zip, settings.ini.
The ``torch`` tests do the same with the PyTorch route (``ptychopinn-torch_*``, ``tests/ptychodus_torch_driver.py``,
a ``model.ckpt`` in the batch folder) and train the supervised reconstructor too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ptychodus, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-ptychodus"
PY = VENV / "bin" / "python"
CHECK = ("import importlib.metadata as md, pathlib, ptychodus, ptycho, tensorflow; "
         "assert md.version('ptychodus') == '1.7.0', md.version('ptychodus'); "
         f"assert pathlib.Path(ptycho.__file__).resolve().parent == pathlib.Path({str(REPO / 'ptycho')!r}), ptycho.__file__")
ENV = {**os.environ, "TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
       "OMP_NUM_THREADS": "2"}
ENV.pop("PYTHONPATH", None)


def _valid() -> bool:
    return PY.is_file() and subprocess.run([str(PY), "-c", CHECK], capture_output=True, env=ENV,
                                           timeout=300).returncode == 0


@pytest.fixture(scope="session")
def ptychodus_python() -> Path:
    if not _valid():
        start = time.monotonic()
        if not PY.is_file():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
        install = subprocess.run(
            [str(PY), "-m", "pip", "install", "-q", "-c", "constraints.txt", "ptychodus==1.7.0", "-e", ".[tf]"],
            cwd=REPO, capture_output=True, text=True, timeout=1800, env=ENV)
        if install.returncode != 0:
            pytest.fail(f"installing ptychodus==1.7.0 into {VENV} failed:\n{install.stdout[-3000:]}\n"
                        f"{install.stderr[-3000:]}", pytrace=False)
        assert _valid(), f"{VENV} still does not import ptychodus 1.7.0 + this ptycho + tensorflow"
        print(f"built {VENV} in {time.monotonic() - start:.0f} s")
    return PY


@pytest.fixture(scope="session")
def driven(ptychodus_python, tmp_path_factory) -> tuple[dict, Path]:
    work = tmp_path_factory.mktemp("ptychodus")
    run = subprocess.run([str(ptychodus_python), str(REPO / "tests" / "ptychodus_driver.py"), str(work),
                          "--nepochs", "15", "--batch_size", "8"],
                         capture_output=True, text=True, timeout=1500, cwd=work, env=ENV)
    assert run.returncode == 0, f"driver failed:\n{run.stdout[-4000:]}\n{run.stderr[-6000:]}"
    return json.loads((work / "result.json").read_text()), work


def test_reconstructor_is_registered_and_export_is_raw_counts(driven):
    result, _ = driven
    assert "ptychopinn_pinn" in result["reconstructors"]
    assert result["exported"]["diff3d_dtype"] in ("uint16", "uint32")  # Ptychodus hands raw detector counts
    assert result["exported"]["probe_shape"] == [1, 64, 64]  # and a 3-D mode stack
    assert result["exported"]["x_error_px"] < 1e-6  # positions round-trip through metres exactly


def test_train_load_reconstruct_headless(driven):
    result, _ = driven
    assert result["model_written"]
    obj = result["object"]
    assert obj["complex"] and obj["finite"] and obj["shape"] == obj["expected_shape"] == [128, 128]
    recon, flat = result["quality"]["reconstruction"], result["quality"]["initial_guess"]
    assert recon["amplitude_psnr"] > flat["amplitude_psnr"] + 0.5, result["quality"]
    assert recon["phase_psnr"] > flat["phase_psnr"], result["quality"]
    assert recon["amplitude_ssim"] > flat["amplitude_ssim"], result["quality"]


def _batch_reconstruct(ptychodus_python: Path, work: Path) -> np.ndarray:
    """``ptychodus -b reconstruct`` of ``work/batch`` (diffraction.h5, product.h5, model, settings.ini): the object."""
    import h5py

    out = work / "batch_out"
    run = subprocess.run([str(ptychodus_python.parent / "ptychodus"), "-b", "reconstruct", "-i", str(work / "batch"),
                          "-o", str(out)], capture_output=True, text=True, timeout=900, cwd=work, env=ENV)
    assert run.returncode == 0, f"ptychodus -b reconstruct failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    written = sorted(out.glob("product*.h5"))  # Ptychodus 1.7.0 names it product.000000.h5
    assert written, f"no product file in {out}: {sorted(p.name for p in out.iterdir())}\n{run.stderr[-3000:]}"
    with h5py.File(written[-1], "r") as h5:
        return np.squeeze(h5["object"][()])


def test_batch_cli_reconstruct(driven, ptychodus_python):
    import h5py

    from ptycho.metrics import evaluate_reconstruction

    _, work = driven
    obj = _batch_reconstruct(ptychodus_python, work)
    truth = np.load(work / "test" / "truth.npy")
    assert np.iscomplexobj(obj) and obj.shape == truth.shape and np.isfinite(obj).all()
    with h5py.File(work / "test" / "product.h5", "r") as h5:
        x = h5["probe_position_x_m"][()]
        y = h5["probe_position_y_m"][()]
    px = 1.23984198e-6 / 10000.0 * 2.0 / (64 * 75e-6)
    xc, yc = x / px + (truth.shape[1] - 1) / 2, y / px + (truth.shape[0] - 1) / 2
    got = evaluate_reconstruction(obj.astype(np.complex64), truth, xcoords=xc, ycoords=yc, N=64)
    flat = evaluate_reconstruction(np.ones_like(truth), truth, xcoords=xc, ycoords=yc, N=64)
    assert got["amplitude"]["psnr"] > flat["amplitude"]["psnr"] + 0.5


# --- the PyTorch route: Ptychodus' PtychoPINN-Torch reconstructors (ptycho_torch.api) --------------------------------


@pytest.fixture(scope="session")
def driven_torch(ptychodus_python, tmp_path_factory) -> tuple[dict, Path]:
    work = tmp_path_factory.mktemp("ptychodus_torch")
    run = subprocess.run([str(ptychodus_python), str(REPO / "tests" / "ptychodus_torch_driver.py"), str(work)],
                         capture_output=True, text=True, timeout=1200, cwd=work, env=ENV)
    assert run.returncode == 0, f"torch driver failed:\n{run.stdout[-4000:]}\n{run.stderr[-6000:]}"
    return json.loads((work / "result.json").read_text()), work


def test_torch_reconstructors_are_registered(driven_torch):
    result, _ = driven_torch
    assert {"ptychopinn-torch_unsupervised", "ptychopinn-torch_supervised"} <= set(result["reconstructors"])


def test_torch_train_load_reconstruct_headless(driven_torch):
    result, _ = driven_torch
    curves = result["unsupervised_training"]
    assert curves and len(curves["training_loss"]) == curves["progress"] > 0  # every epoch's loss reached Ptychodus
    assert curves["validation_loss"] and all(np.isfinite(curves["training_loss"] + curves["validation_loss"]))
    assert result["checkpoints"] and result["bundle_written"]  # .ckpt for Ptychodus, wts.h5.zip for ptycho-infer
    obj = result["object"]
    assert obj["complex"] and obj["finite"]
    assert obj["shape"] == result["input_object"]["shape"]  # on the object grid Ptychodus made for this scan
    recon, flat = result["quality"]["reconstruction"], result["quality"]["initial_guess"]
    assert recon["amplitude_psnr"] > flat["amplitude_psnr"] + 0.5, result["quality"]
    assert recon["phase_psnr"] > flat["phase_psnr"], result["quality"]
    assert recon["amplitude_ssim"] > flat["amplitude_ssim"], result["quality"]


def test_torch_supervised_trains_on_the_object_guess(driven_torch):
    result, _ = driven_torch
    curves = result["supervised_training"]
    assert curves and curves["training_loss"] and all(np.isfinite(curves["training_loss"]))
    assert result["supervised_checkpoints"] >= 1


def test_torch_batch_cli_reconstruct(driven_torch, ptychodus_python):
    import h5py

    _, work = driven_torch
    obj = _batch_reconstruct(ptychodus_python, work)
    with h5py.File(work / "batch" / "product.h5", "r") as h5:
        expected = np.squeeze(h5["object"][()]).shape
    assert np.iscomplexobj(obj) and np.isfinite(obj).all() and obj.shape == expected
    assert np.abs(obj).max() > 0
