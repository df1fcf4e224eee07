"""Periodic atomic checkpoints and exact resume, in process (the Slurm requeue itself is in test_fault_tolerance).

A training interrupted mid-epoch (an exception after step K, standing in for a kill) resumes from the newest
periodic checkpoint at its exact global step, ends with the configured epochs and step count, restores the
optimizer and every rank's RNG state, and continues the same TensorBoard run.
"""

from __future__ import annotations

import errno
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_scan_pair
from lightning.pytorch.callbacks import Callback

from ptycho.config.config import PyTorchExecutionConfig
from ptycho.data_contract import load_scan
from ptycho_torch.api.checkpoint import CHECKPOINT_KEY, configs_from_record, read_checkpoint
from ptycho_torch.checkpointing import AtomicCheckpointIO, ResumeState, newest_checkpoint
from ptycho_torch.config_factory import create_training_payload
from ptycho_torch.trainer import build_trainer
from ptycho_torch.workflows.components import train_cdi_model_torch

torch.set_num_threads(1)
STEPS_PER_EPOCH = 4  # 36 groups, 10% held out -> 32 training groups / batch 8
EPOCHS = 3


class Crash(RuntimeError):
    pass


class CrashAfter(Callback):
    """Stands in for a kill: the process stops right after optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Crash(f"killed after step {self.step}")


class Steps(Callback):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.seen.append(trainer.global_step)


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, Path]:
    return write_scan_pair(tmp_path_factory.mktemp("ckpt_scans"), 36, 9, seeds=(5, 6))


def _payload(scans, out: Path, **execution):
    return create_training_payload(
        scans["train"], out, overrides={"n_groups": 36, "gridsize": 1, "nepochs": EPOCHS, "batch_size": 8,
                                        "n_filters_scale": 1},
        execution_config=PyTorchExecutionConfig(enable_progress_bar=False, accelerator="cpu", **execution))


def test_interrupted_training_resumes_at_the_exact_step_with_the_same_epochs(scans, tmp_path):
    payload = _payload(scans, tmp_path, checkpoint_every_n_steps=3)
    train = load_scan(scans["train"])
    with pytest.raises(Crash):
        train_cdi_model_torch(train, None, payload, callbacks=[CrashAfter(7)])  # mid epoch 1
    resume = newest_checkpoint(tmp_path)
    assert resume == tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(resume, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 6 and saved["optimizer_states"][0]["state"]  # step 6: the last multiple of 3
    assert not (tmp_path / "wts.h5.zip").exists()
    # the periodic resume files carry the configs too (Ptychodus loads them), readable without unpickling code
    stored = configs_from_record(read_checkpoint(resume)[CHECKPOINT_KEY], resume)
    assert stored.data_config.N == payload.tf_training_config.model.N and stored.data_config.grid_size == (1, 1)

    steps = Steps()
    results = train_cdi_model_torch(train, None, payload, callbacks=[steps], ckpt_path=str(resume))
    resumed = next(c for c in results["trainer"].callbacks if isinstance(c, ResumeState))
    assert resumed.resumed_step == 6
    assert steps.seen[0] == 7 and steps.seen[-1] == EPOCHS * STEPS_PER_EPOCH  # no step lost, none repeated
    assert results["trainer"].current_epoch == EPOCHS and results["trainer"].global_step == EPOCHS * STEPS_PER_EPOCH
    assert (tmp_path / "wts.h5.zip").is_file()
    assert CHECKPOINT_KEY in read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")  # and the continuation's
    assert [p.name for p in (tmp_path / "tb").iterdir() if p.is_dir()] == []  # one TensorBoard run, no version_N
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 2  # first attempt + continuation
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


def test_time_trigger_checkpoints_mid_epoch(scans, tmp_path):
    payload = _payload(scans, tmp_path, checkpoint_every_minutes=1e-6)
    with pytest.raises(Crash):
        train_cdi_model_torch(load_scan(scans["train"]), None, payload, callbacks=[CrashAfter(2)])
    assert torch.load(newest_checkpoint(tmp_path), weights_only=False)["global_step"] in (1, 2)


def test_rng_states_travel_with_the_checkpoint(tmp_path):
    trainer = build_trainer(PyTorchExecutionConfig(accelerator="cpu", enable_progress_bar=False,
                                                   logger_backend=None), tmp_path, 1, True)
    state = next(c for c in trainer.callbacks if isinstance(c, ResumeState))
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    checkpoint: dict = {"global_step": 5}
    state.on_save_checkpoint(trainer, None, checkpoint)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    state.on_load_checkpoint(trainer, None, checkpoint)
    assert state.resumed_step == 5
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_checkpoint_write_is_atomic_on_a_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, target)
    before = target.read_bytes()

    def full(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"global_step": 2}, target)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_newest_checkpoint_skips_a_damaged_file(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert newest_checkpoint(tmp_path) is None
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, folder / "epoch000-step000004.ckpt")
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    assert newest_checkpoint(tmp_path) == folder / "epoch000-step000004.ckpt"


def test_periodic_checkpoints_need_checkpointing_on():
    with pytest.raises(ValueError, match="need enable_checkpointing=True"):
        PyTorchExecutionConfig(enable_checkpointing=False, checkpoint_every_n_steps=10)
    with pytest.raises(ValueError, match="checkpoint_every_minutes"):
        PyTorchExecutionConfig(checkpoint_every_minutes=0)
