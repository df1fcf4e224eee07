"""Every kind of bad input, through the real command-line entry points: one line naming the file or field (and what
to do), a non-zero exit (2 usage, 1 bad data), no traceback, nothing written.

The table runs each CLI's own ``main`` in this process (parsing, validation and error handling are exactly the
console scripts'; one process keeps ~40 cases fast); ``test_console_scripts_fail_cleanly`` runs one case of each
CLI as a real subprocess.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

from conftest import write_scan_pair

BIN = Path(sys.executable).parent


@dataclass
class Case:
    name: str
    cli: str  # ptycho-train | ptycho-infer | ptycho-launch
    args: Callable[[dict], list[str]]
    code: int
    message: str
    slurm: bool = False


def _scan_variant(root: Path, base: dict, name: str, change: Callable[[dict], None]) -> Path:
    arrays = {k: v.copy() for k, v in base.items()}
    change(arrays)
    path = root / f"{name}.npz"
    np.savez(path, **arrays)
    return path


def _drop(key: str) -> Callable[[dict], None]:
    return lambda a: a.pop(key)


def _set(key: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict], None]:
    def change(a: dict) -> None:
        a[key] = make(a[key])
    return change


def _nan(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    a.flat[0] = np.nan
    return a


def _inf(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    a[0] = np.inf
    return a


SCANS: dict[str, Callable[[dict], None]] = {
    "no_diffraction": _drop("diffraction"),
    "no_probe": _drop("probeGuess"),
    "no_xcoords": _drop("xcoords"),
    "no_ycoords": _drop("ycoords"),
    "complex_amplitudes": _set("diffraction", lambda d: d.astype(np.complex64)),
    "integer_probe": _set("probeGuess", lambda p: np.abs(p).astype(np.int32)),
    "short_xcoords": _set("xcoords", lambda x: x[:-1]),
    "probe_size_mismatch": _set("probeGuess", lambda p: p[:32, :32]),
    "nan_diffraction": _set("diffraction", _nan),
    "inf_coords": _set("ycoords", _inf),
    "empty_scan": lambda a: a.update(diffraction=a["diffraction"][:0], xcoords=a["xcoords"][:0],
                                     ycoords=a["ycoords"][:0], **({"scan_index": a["scan_index"][:0]}
                                                                  if "scan_index" in a else {})),
    "unsupported_N": lambda a: a.update(diffraction=a["diffraction"][:, :48, :48],
                                        probeGuess=a["probeGuess"][:48, :48]),
    "probe_not_square": _set("probeGuess", lambda p: p[:, :60]),
}
SCAN_MESSAGES = {
    "no_diffraction": "missing required key 'diffraction'", "no_probe": "missing required key 'probeGuess'",
    "no_xcoords": "missing required key 'xcoords'", "no_ycoords": "missing required key 'ycoords'",
    "complex_amplitudes": "'diffraction' must be real amplitude", "integer_probe": "'probeGuess' must be complex",
    "short_xcoords": "'xcoords' has 15 positions but 'diffraction' has 16", "probe_size_mismatch": "'probeGuess' is 32x32",
    "nan_diffraction": "'diffraction' holds 1 non-finite", "inf_coords": "'ycoords' holds 1 non-finite",
    "empty_scan": "empty scan", "unsupported_N": "N=48 is not supported", "probe_not_square": "must be square",
}


def _bundle_variant(root: Path, good: Path, name: str) -> Path:
    """Damaged copies of a real bundle: each the way it would arrive from a bad copy, another tool or a hostile
    sender."""
    data = good.read_bytes()
    path = root / name / "wts.h5.zip"
    path.parent.mkdir()
    if name == "bundle_corrupt":
        path.write_bytes(b"this is not a zip archive" * 10)
        return path
    if name == "bundle_truncated":
        path.write_bytes(data[: len(data) // 2])
        return path
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            content = src.read(item)
            if item.filename == "manifest.json":
                manifest = json.loads(content)
                if name == "bundle_other_backend":
                    manifest["backend"] = "tensorflow"
                elif name == "bundle_future_format":
                    manifest["format_version"] = 99
                content = json.dumps(manifest).encode()
            if name == "bundle_escaping_member" and item.filename.endswith(".pt"):
                dst.writestr("../" + item.filename, content)
                continue
            dst.writestr(item.filename, content)
    return path


BUNDLE_MESSAGES = {
    "bundle_corrupt": "not a readable bundle archive", "bundle_truncated": "wts.h5.zip", "bundle_other_backend": "tensorflow",
    "bundle_future_format": "upgrade ptychopinn", "bundle_escaping_member": "escapes the bundle folder",
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """Good scans, a good bundle (tiny training), and one broken file per case."""
    from ptycho.config.config import PyTorchExecutionConfig
    from ptycho.data_contract import load_scan
    from ptycho_torch.config_factory import create_training_payload
    from ptycho_torch.workflows.components import train_cdi_model_torch

    root = tmp_path_factory.mktemp("bad_input")
    paths: dict = write_scan_pair(root, 16, 9, seeds=(3, 4))
    run = root / "model"
    payload = create_training_payload(paths["train"], run, {"n_groups": 8, "nepochs": 1, "batch_size": 4,
                                                            "n_filters_scale": 1, "gridsize": 1},
                                      PyTorchExecutionConfig(enable_progress_bar=False, logger_backend=None,
                                                             accelerator="cpu"))
    paths["bundle"] = train_cdi_model_torch(load_scan(paths["train"]), None, payload)["bundle_path"]
    base = dict(np.load(paths["train"]))
    for name, change in SCANS.items():
        paths[name] = _scan_variant(root, base, name, change)
    paths["corrupt_npz"] = root / "corrupt.npz"
    paths["corrupt_npz"].write_bytes(b"garbage" * 100)
    paths["truncated_npz"] = root / "truncated.npz"
    paths["truncated_npz"].write_bytes(paths["train"].read_bytes()[: paths["train"].stat().st_size // 2])
    for name in BUNDLE_MESSAGES:
        paths[name] = _bundle_variant(root, paths["bundle"], name)
    paths["a_file"] = root / "a_file"
    paths["a_file"].write_text("")
    paths["out"] = root / "out"  # must never be created by a failing command (the table gives each case its own)
    return paths


def _train(scan: str, *extra: str) -> Callable[[dict], list[str]]:
    return lambda p: ["--train_data_file", str(p[scan]), "--output_dir", str(p["out"]), "--nepochs", "1", *extra]


def _infer(bundle: str = "bundle", scan: str = "test", *extra: str) -> Callable[[dict], list[str]]:
    return lambda p: ["--model_path", str(p[bundle]), "--test_data_file", str(p[scan]), "--output_dir",
                      str(p["out"]), *extra]


def _launch(*extra: str, scan: str = "train") -> Callable[[dict], list[str]]:
    return lambda p: ["train", "--cluster", "debug", "--train_data_file", str(p[scan]), "--run-dir",
                      str(p["out"]), *extra]


CASES = [
    *[Case(f"train {name}", "ptycho-train", _train(name), 2, message) for name, message in SCAN_MESSAGES.items()],
    *[Case(f"infer {name}", "ptycho-infer", _infer(scan=name), 2, message)
      for name, message in SCAN_MESSAGES.items() if name in ("no_diffraction", "nan_diffraction", "empty_scan")],
    *[Case(f"launch {name}", "ptycho-launch", _launch(scan=name), 2, message)
      for name, message in SCAN_MESSAGES.items() if name in ("no_probe", "complex_amplitudes", "short_xcoords")],
    Case("train corrupt npz", "ptycho-train", _train("corrupt_npz"), 2, "corrupt.npz: is not a readable NPZ"),
    Case("train truncated npz", "ptycho-train", _train("truncated_npz"), 2, "truncated.npz: is not a readable NPZ"),
    Case("launch truncated npz", "ptycho-launch", _launch(scan="truncated_npz"), 2, "truncated.npz: invalid scan"),
    *[Case(f"infer {name}", "ptycho-infer", _infer(bundle=name), 2, message) for name, message in BUNDLE_MESSAGES.items()],
    Case("launch infer bundle_future_format", "ptycho-launch",
         lambda p: ["infer", "--cluster", "debug", "--model_path", str(p["bundle_future_format"]), "--test_data_file",
                    str(p["test"]), "--output_dir", str(p["out"])], 2, "upgrade ptychopinn"),
    Case("n_groups larger than the scan", "ptycho-train", _train("train", "--n_groups", "500"), 2, "n_groups"),
    Case("gridsize C above neighbor_count", "ptycho-train",
         _train("train", "--gridsize", "3", "--neighbor_count", "4"), 2, "neighbor_count"),
    Case("unknown strategy", "ptycho-train", _train("train", "--strategy", "horovod"), 2, "--strategy: invalid choice"),
    Case("unknown accelerator", "ptycho-launch", _launch("--accelerator", "tpu9"), 2, "--accelerator: invalid choice"),
    Case("unknown profile", "ptycho-launch", _launch("--profile", "no-such-site"), 2, "no-such-site"),
    Case("unknown partition", "ptycho-launch",
         lambda p: ["train", "--cluster", "slurm", "--partition", "nosuch", "--train_data_file", str(p["train"]),
                    "--run-dir", str(p["out"])], 2, "invalid partition specified: nosuch", slurm=True),
    Case("run dir with a newline (sbatch directive injection)", "ptycho-launch",
         lambda p: _launch()(p)[:-1] + [str(p["out"].parent / "x\ntouch PWNED #")], 2, "control character"),
    Case("partition with a newline", "ptycho-launch", _launch("--partition", "debug\ntouch PWNED"), 2,
         "--partition 'debug\\ntouch PWNED': contains a newline"),
    Case("output dir under a file", "ptycho-train",
         lambda p: ["--train_data_file", str(p["train"]), "--output_dir", str(p["a_file"] / "out")], 2, "a_file"),
    Case("output dir not writable", "ptycho-infer",
         lambda p: ["--model_path", str(p["bundle"]), "--test_data_file", str(p["test"]), "--output_dir",
                    "/proc/ptycho-out"], 2, "/proc/ptycho-out"),
    Case("run dir not writable", "ptycho-launch",
         lambda p: ["train", "--cluster", "debug", "--train_data_file", str(p["train"]), "--run-dir",
                    "/proc/ptycho-run/x"], 2, "/proc/ptycho-run"),
]


def _entry(cli: str) -> Callable[[list[str]], int]:
    from launcher.cli import main as launch_main
    from ptycho_torch.cli import run_inference_cli, run_training_cli

    return {"ptycho-train": run_training_cli, "ptycho-infer": run_inference_cli, "ptycho-launch": launch_main}[cli]


def _call(cli: str, argv: list[str], capsys) -> tuple[Optional[int], str]:
    try:
        code = _entry(cli)(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_with_one_clear_line_and_writes_nothing(case, inputs, capsys, request, tmp_path):
    if case.slurm:
        request.getfixturevalue("slurm_cluster")
    out = tmp_path / "out"
    code, err = _call(case.cli, case.args({**inputs, "out": out}), capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == case.code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(case.cli) and ": error: " in lines[0] and case.message in lines[0], lines[0]
    assert not out.exists(), f"{case.name} wrote {sorted(out.rglob('*'))}"


def test_disk_full_while_writing_leaves_no_partial_file(inputs, tmp_path, capsys):
    """A 96 KiB tmpfs: the snapshot fits, the reconstruction does not. One line, exit 1, only complete files."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        code, err = _call("ptycho-infer", _infer()({**inputs, "out": mount / "out"}), capsys)
        assert code == 1 and "No space left on device" in err and "Traceback" not in err, err
        assert "free space" in err
        left = sorted(p.name for p in (mount / "out").rglob("*"))
        assert not [name for name in left if name.endswith(".tmp")], left
        assert "reconstruction.npz" not in left
        for json_file in (mount / "out").rglob("*.json"):
            json.loads(json_file.read_text())  # complete, parseable
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_console_scripts_fail_cleanly(inputs):
    """The installed executables, one per CLI: exit status and a single line on stderr."""
    for cli, argv, code in (("ptycho-train", _train("nan_diffraction")(inputs), 2),
                            ("ptycho-infer", _infer(bundle="bundle_truncated")(inputs), 2),
                            ("ptycho-launch", _launch(scan="corrupt_npz")(inputs), 2)):
        res = subprocess.run([str(BIN / cli), *argv], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert res.returncode == code and len(lines) == 1 and lines[0].startswith(f"{cli}: error: "), res.stderr
    assert not inputs["out"].exists()

