"""The PyTorch backend never imports TensorFlow (issue 13), and ``disable_mlflow`` always wins over the logger choice.

TensorBoard's ``tensorboard.compat.tf`` imports TensorFlow whenever it is installed, which cost every PyTorch training
process ~8-15 s; ``ptycho_torch.tensorboard_logging`` pins the PyTorch SummaryWriter to TensorBoard's stub. The
subprocess tests are meaningful only where TensorFlow is installed, so they skip otherwise.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
needs_tensorflow = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                      reason="TensorFlow not installed: nothing could import it")

TRAIN_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    t0 = time.perf_counter()
    root = Path(sys.argv[1])
    from ptycho.data_contract import save_scan
    from ptycho.simulate import simulate_scan
    save_scan(root / "train.npz", simulate_scan(N=64, object_size=128, n_positions=16, seed=11))
    from ptycho_torch.cli import run_training_cli
    code = run_training_cli(["--train_data_file", str(root / "train.npz"), "--output_dir", str(root / "out"),
                             "--n_groups", "16", "--nepochs", "1", "--batch_size", "8", "--n_filters_scale", "1",
                             "--gridsize", "2", "--accelerator", "cpu", "--quiet"])  # default logger: tensorboard
    assert code == 0, code
    print("TENSORFLOW_IMPORTED", "tensorflow" in sys.modules)
    print("SECONDS", round(time.perf_counter() - t0, 2))
""")

MIXED_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    root = Path(sys.argv[1])
    from ptycho_torch.tensorboard_logging import use_tensorboard_without_tensorflow
    use_tensorboard_without_tensorflow()
    from torch.utils.tensorboard import SummaryWriter
    w = SummaryWriter(str(root / "torch")); w.add_scalar("x", 1.0, 0); w.close()
    assert "tensorflow" not in sys.modules
    assert "tensorboard.compat.notf" not in sys.modules
    # the same process can still use TensorFlow's own summaries (they go through tensorboard.compat.tf2)
    import tensorflow as tf
    writer = tf.summary.create_file_writer(str(root / "tf"))
    with writer.as_default():
        assert bool(tf.summary.scalar("y", 1.0, step=0))
    writer.flush()
    print("OK")
""")


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _scalar_tags(events_file: Path) -> set[str]:
    """Scalar tags in a TensorBoard events file (TFRecord framing read by hand: no TensorFlow needed)."""
    from tensorboard.compat.proto import event_pb2

    data, tags, pos = events_file.read_bytes(), set(), 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos:pos + 8])
        record = data[pos + 12:pos + 12 + length]
        pos += 12 + length + 4
        event = event_pb2.Event.FromString(record)
        tags.update(v.tag for v in event.summary.value)
    return tags


@needs_tensorflow
def test_pytorch_training_with_default_logger_never_imports_tensorflow(tmp_path):
    res = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(tmp_path)], cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "TENSORFLOW_IMPORTED False" in res.stdout, res.stdout[-2000:]
    events = sorted((tmp_path / "out" / "tb").glob("events.out.tfevents.*"))
    assert events, sorted(str(p) for p in (tmp_path / "out").rglob("*"))
    assert any("train_loss" in tag for f in events for tag in _scalar_tags(f)), [_scalar_tags(f) for f in events]


@needs_tensorflow
def test_tensorflow_summaries_still_work_after_the_pytorch_writer(tmp_path):
    res = subprocess.run([sys.executable, "-c", MIXED_SCRIPT, str(tmp_path)], cwd=REPO, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout[-2000:] + res.stderr[-4000:]
    assert list((tmp_path / "torch").glob("events.out.tfevents.*"))
    assert list((tmp_path / "tf").glob("events.out.tfevents.*"))


# ---------------------------------------------------------------------------------------------- disable_mlflow


def _execution(**kwargs):
    from ptycho.config.config import PyTorchExecutionConfig

    return PyTorchExecutionConfig(**{"accelerator": "cpu", "enable_progress_bar": False, **kwargs})


def test_disable_mlflow_with_mlflow_logger_warns_and_uses_no_logger(tmp_path, caplog):
    from ptycho_torch.trainer import build_logger, build_trainer

    with caplog.at_level(logging.WARNING, logger="ptycho_torch.trainer"):
        assert build_logger(_execution(logger_backend="mlflow", disable_mlflow=True), tmp_path) is False
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("logger_backend='mlflow'" in m and "disable_mlflow=True" in m for m in messages), messages
    trainer = build_trainer(_execution(logger_backend="mlflow", disable_mlflow=True), tmp_path, max_epochs=1,
                            has_validation=True)
    assert trainer.logger is None and trainer.loggers == []
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("backend", ["tensorboard", "csv", None])
def test_disable_mlflow_leaves_other_loggers_alone_and_silent(tmp_path, caplog, backend):
    from ptycho_torch.trainer import build_logger

    with caplog.at_level(logging.WARNING, logger="ptycho_torch.trainer"):
        result = build_logger(_execution(logger_backend=backend, disable_mlflow=True), tmp_path)
    assert "mlflow" not in type(result).__name__.lower()
    assert (result is False) == (backend is None)
    assert not caplog.records


def test_trainer_refuses_an_mlflow_logger_when_disabled(tmp_path, monkeypatch):
    """Whatever builds the loggers, a trainer with disable_mlflow=True never carries an MLflow logger."""
    from lightning.pytorch.loggers import CSVLogger

    import ptycho_torch.trainer as trainer_module

    class MLFlowLogger(CSVLogger):  # stands in for lightning's MLFlowLogger (mlflow is not installed here)
        pass

    monkeypatch.setattr(trainer_module, "build_logger", lambda execution, output_dir: MLFlowLogger(str(output_dir)))
    with pytest.raises(RuntimeError, match="disable_mlflow=True"):
        trainer_module.build_trainer(_execution(disable_mlflow=True), tmp_path, max_epochs=1, has_validation=True)
    trainer = trainer_module.build_trainer(_execution(), tmp_path, max_epochs=1, has_validation=True)
    assert type(trainer.logger).__name__ == "MLFlowLogger"
