"""What every rank of a training job, and every task of an inference array, runs.

The same code serves all paths: submitit on Slurm or locally (``TrainingTask`` / ``run_chunk`` with the spec
dict), the plain sbatch templates (``python -m launcher.rank_entry --spec SPEC.json [--chunk I]``) and
``--cluster debug`` (called in-process). An array task (``run_chunk``) reconstructs its inputs (``infer_chunk``) or
prepares its scans into the store (``prepare_chunk``), as its chunk's ``kind`` says.

Training, per rank: rebuild the payload with the config factory (which also fills ``params.cfg``), log the
SHA-256 of ``payload_fingerprint``, all-gather the fingerprints and abort with both hashes when any rank differs,
then train. Lightning writes checkpoints and TensorBoard on global rank zero only; the workflow writes the bundle on
rank zero only; this module writes ``summary.json`` on rank zero only. Other ranks write only their own logs.

Resume: every start looks for the newest complete checkpoint in the run directory (a requeue, ``retry`` and
``train --resume`` all land here), so the path is never baked into submitit's pickle. Rank zero appends each
resumption (job id, Slurm restart count, time, checkpoint, step) to run.json's ``resumes``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from submitit.helpers import Checkpointable

from launcher.errors import one_line
from launcher.rundir import SUMMARY, now, read_json, update_run, write_json

__all__ = ["TrainingTask", "train_rank", "run_chunk", "infer_chunk", "prepare_chunk", "verify_fingerprints",
           "PayloadMismatchError", "main"]


class PayloadMismatchError(RuntimeError):
    """Ranks rebuilt different payloads (different files, code or environment on some node)."""


def verify_fingerprints(gathered: Sequence[tuple[int, str]]) -> str:
    """All ranks' (rank, sha256) pairs must agree; the error names the first two that differ."""
    ordered = sorted(gathered)
    reference_rank, reference = ordered[0]
    for rank, sha in ordered[1:]:
        if sha != reference:
            raise PayloadMismatchError(
                f"payload mismatch: rank {reference_rank} sha256 {reference} != rank {rank} sha256 {sha}; "
                "the ranks rebuilt different configurations (files or package versions differ between nodes?)")
    return reference


def _log(rank: int, message: str) -> None:
    print(f"[rank {rank}] {message}", flush=True)


def _cluster_environment(cluster: str) -> tuple[list[Any], int, int, int, Optional[tuple[str, int]]]:
    """(Lightning plugins, global rank, world size, local rank, (main address, port)) for this process.

    Slurm: Lightning's SLURMEnvironment with auto_requeue=False (submitit owns requeueing; Lightning's handler
    would listen for a different signal). Local: submitit's TorchDistributedEnvironment exported *before* the
    Trainer exists (otherwise Lightning re-launches the script and doubles the processes), without touching
    CUDA_VISIBLE_DEVICES (Trainer(devices=N) must see all N devices).
    """
    if cluster == "slurm":
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        env = SLURMEnvironment(auto_requeue=False)
        return [env], env.global_rank(), env.world_size(), env.local_rank(), (env.main_address, env.main_port)
    if cluster == "local":
        from lightning.pytorch.plugins.environments import LightningEnvironment
        from submitit.helpers import TorchDistributedEnvironment

        dist_env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return ([LightningEnvironment()], dist_env.rank, dist_env.world_size, dist_env.local_rank,
                (dist_env.master_addr, dist_env.master_port))
    return [], 0, 1, 0, None


def _gather_fingerprints(sha: str, rank: int, world: int, local_rank: int, main: tuple[str, int],
                         accelerator: str, timeout_s: int) -> list[tuple[int, str]]:
    """Open the process group (bounded timeout; Lightning reuses it) and all-gather every rank's fingerprint."""
    import torch
    import torch.distributed as dist

    from ptycho.config.config import GPU_ACCELERATORS

    backend = "nccl" if accelerator in GPU_ACCELERATORS and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    address, port = main
    dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (rank, sha))
    return [tuple(item) for item in gathered]


#: the latest optimizer step of this process: the requeue handler runs in a signal handler and can only log this
_PROGRESS: dict[str, Optional[int]] = {"step": None}


def _first_step_callback(rank: int) -> Any:
    from lightning.pytorch.callbacks import Callback

    class FirstStep(Callback):
        """Logs the wall-clock time of the first optimizer step (the launch benchmark reads it) and keeps
        ``_PROGRESS`` current."""

        def __init__(self) -> None:
            self.at: Optional[float] = None

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            _PROGRESS["step"] = trainer.global_step
            if self.at is None:
                self.at = time.time()
                _log(rank, f"first optimizer step at {self.at:.3f}")

    return FirstStep()


def _progress_recorder(run_dir: Path) -> Any:
    from lightning.pytorch.callbacks import Callback

    from launcher.sweep_table import PROGRESS

    class RecordProgress(Callback):
        """Global rank zero writes ``progress.json`` (epochs done, latest and best losses) after every epoch, so
        ``status`` shows a running sweep point's epoch and best validation loss without asking the job."""

        def __init__(self) -> None:
            self.best: dict[str, float] = {}

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            if not trainer.is_global_zero:
                return
            latest = {}
            for key in ("train_loss", "val_loss"):
                value = trainer.callback_metrics.get(key)
                if value is not None:
                    latest[key] = float(value)
                    self.best[key] = min(self.best.get(key, latest[key]), latest[key])
            write_json(run_dir / PROGRESS, {
                "epoch": trainer.current_epoch + 1, "global_step": trainer.global_step, **latest,
                "best_val_loss": self.best.get("val_loss"), "best_train_loss": self.best.get("train_loss"),
                "at": now()})

    return RecordProgress()


def _quality(metrics: Optional[dict[str, Any]]) -> Optional[dict[str, float]]:
    """SSIM of amplitude and phase against the validation scan's truth (None without one)."""
    if not metrics:
        return None
    return {"amp_ssim": float(metrics["amplitude"]["ssim"]), "phase_ssim": float(metrics["phase"]["ssim"])}


def _keep_submitit_sigterm() -> Any:
    from lightning.pytorch.callbacks import Callback

    class KeepSubmititSigterm(Callback):
        """Lightning (2.6) ends training on SIGTERM, but Slurm sends SIGTERM ahead of the USR2 that makes submitit
        checkpoint and requeue, and submitit ignores it on purpose. Once Lightning has installed its handler,
        submitit's comes back, so a preemption becomes a requeue instead of a failed job."""

        def __init__(self) -> None:
            self.handler = signal.getsignal(signal.SIGTERM)

        def on_train_start(self, trainer: Any, module: Any) -> None:
            signal.signal(signal.SIGTERM, self.handler)

    return KeepSubmititSigterm()


def _restart_count() -> int:
    """How often Slurm has requeued this job (0 on the first start and outside Slurm)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def _resume_recorder(run_dir: Path, checkpoint: Optional[Path]) -> Any:
    from lightning.pytorch.callbacks import Callback

    from ptycho_torch.checkpointing import ResumeState

    class RecordResume(Callback):
        """Once the checkpoint is restored, rank zero logs and records where training resumed."""

        def on_train_start(self, trainer: Any, module: Any) -> None:
            if not trainer.is_global_zero:
                return
            step = next((c.resumed_step for c in trainer.callbacks if isinstance(c, ResumeState)), None)
            _log(0, f"resumed from {checkpoint} at step {step}" if checkpoint else "restarted without a checkpoint")
            update_run(run_dir, resumes=[{"job_id": _job_id(), "restart_count": _restart_count(), "at": now(),
                                          "checkpoint": str(checkpoint) if checkpoint else None, "step": step}])

    return RecordResume()


def train_rank(spec: dict[str, Any]) -> dict[str, Any]:
    """One training rank: rebuild, cross-check, train; rank zero records the outcome."""
    started = time.time()
    from ptycho.config.config import PyTorchExecutionConfig
    from ptycho_torch.config_factory import create_training_payload, payload_fingerprint

    run_dir = Path(spec["run_dir"])
    plugins, rank, world, local_rank, main = _cluster_environment(spec["cluster"])
    execution = PyTorchExecutionConfig.from_dict(spec["execution"])
    payload = create_training_payload(spec["train_data_file"], run_dir, spec["overrides"], execution)
    sha = payload_fingerprint(payload)
    _log(rank, f"of {world} on {socket.gethostname()} ({os.environ.get('SLURMD_NODENAME', 'local')}): "
               f"payload sha256 {sha}")
    gathered = [(0, sha)]
    if world > 1:
        gathered = _gather_fingerprints(sha, rank, world, local_rank, main, execution.accelerator,
                                        int(spec["dist_timeout_s"]))
        try:
            verify_fingerprints(gathered)
        except PayloadMismatchError:
            import torch.distributed as dist

            dist.destroy_process_group()
            raise
        _log(rank, f"all {world} ranks rebuilt the same payload")
    if rank == 0:
        update_run(run_dir, state="running", started_at=now())

    from ptycho.backends import TrainingHooks
    from ptycho.workflows.training import train_and_reconstruct, training_data

    train, test = training_data(payload, progress=rank == 0)  # a corpus: prepared (or reused) under a lock

    first_step = _first_step_callback(rank)
    resume = _newest_checkpoint(run_dir)
    callbacks = [first_step, _progress_recorder(run_dir)]
    if spec["cluster"] != "debug":
        callbacks.append(_keep_submitit_sigterm())
    if resume or _restart_count():
        callbacks.append(_resume_recorder(run_dir, resume))
    hooks = TrainingHooks(plugins=plugins, callbacks=callbacks, ckpt_path=str(resume) if resume else None)
    # a sweep point (spec "score") also reconstructs its validation scan, for the SSIM against its truth
    results = train_and_reconstruct(payload, train, test, hooks, do_stitching=bool(spec.get("score")))
    trainer = results.get("trainer")  # a Lightning trainer for backends that have one
    summary = {
        "bundle": str(results["bundle_path"]) if results["bundle_path"] else None,
        "backend": results["backend"],
        "payload_sha256": sha,
        "rank_fingerprints": {str(r): s for r, s in gathered},
        "world_size": world,
        "trainer_world_size": trainer.world_size if trainer is not None else 1,
        "started_at": started,
        "first_step_at": first_step.at,
        "finished_at": time.time(),
        "train_seconds": results["train_seconds"],
        "train_samples_per_s": results["train_samples_per_s"],
        "history": results["history"],
        "resumed_from": str(resume) if resume else None,
        "resumed_from_step": _resumed_step(trainer),
        "global_step": trainer.global_step if trainer is not None else None,
        "epochs": trainer.current_epoch if trainer is not None else results.get("epochs_run"),
        "quality": _quality(results.get("metrics")),
    }
    if results["is_global_zero"]:
        write_json(run_dir / SUMMARY, summary)
        update_run(run_dir, state="completed", finished_at=now())
        _log(rank, f"bundle: {results['bundle_path']} (backend {results['backend']})")
    return summary


def _newest_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest complete Lightning checkpoint of the run (none for backends without checkpoints)."""
    if not (run_dir / "checkpoints").is_dir():
        return None
    from ptycho_torch.checkpointing import newest_checkpoint

    return newest_checkpoint(run_dir)


def _resumed_step(trainer: Any) -> Optional[int]:
    if trainer is None:
        return None
    from ptycho_torch.checkpointing import ResumeState

    return next((c.resumed_step for c in trainer.callbacks if isinstance(c, ResumeState)), None)


class TrainingTask(Checkpointable):
    """The submitted callable. On timeout/preemption submitit calls ``checkpoint`` (rank zero, in a signal
    handler): it only returns the resubmission (or None past ``max_requeues``); the requeued job resumes from the
    newest checkpoint in the run directory, which all ranks refresh together every epoch and at the configured
    step/minute intervals. Nothing collective and no file locking happens in the handler."""

    def __call__(self, spec: dict[str, Any]) -> dict[str, Any]:
        return train_rank(spec)

    def checkpoint(self, spec: dict[str, Any]) -> Any:
        """submitit bounds timeouts only; preemptions count here too, so a job cannot requeue forever."""
        if _restart_count() >= int(spec["max_requeues"]):
            _log(0, f"not requeued: already requeued {_restart_count()} time(s) (--max-requeues "
                    f"{spec['max_requeues']}); continue by hand with ptycho-launch train --resume RUN_DIR")
            return None
        _log(0, f"requeue requested at step {_PROGRESS['step']}: the job restarts from the newest checkpoint")
        return super().checkpoint(spec)


def _job_id() -> str:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID", f"local-{os.getpid()}")


def run_chunk(spec: dict[str, Any]) -> dict[str, Any]:
    """One array task, whatever the array does: the callable submitted for every chunk."""
    return prepare_chunk(spec) if spec["kind"] == "prepare" else infer_chunk(spec)


def prepare_chunk(spec: dict[str, Any]) -> dict[str, Any]:
    """One preparation task: its chunk of scans into the shared store (``ptycho.corpus.store.prepare_store``, which
    reuses every scan already prepared with these settings and merges the index under the store's lock).

    The chunk's status file records the state and, once done, the result: scans prepared and reused, positions,
    patterns, seconds and patterns/s. A failure is recorded there too, then raised, so the scheduler shows it and
    ``retry`` picks it up.
    """
    from launcher.arrays import write_status
    from ptycho.corpus.store import StoreSettings, prepare_store

    status = Path(spec["status"])
    started = time.time()
    record = {"task": spec["chunk"], "job_id": _job_id(), "host": socket.gethostname(), "started_at": started,
              "store": spec["store_dir"], "scans": len(spec["items"])}
    write_status(status, {**record, "state": "running"})
    try:
        store = prepare_store([item["input"] for item in spec["items"]], spec["store_dir"],
                              StoreSettings(**spec["settings"]), progress=False)
    except Exception as exc:  # noqa: BLE001 - recorded for status/retry, then raised
        message = one_line(exc)
        write_status(status, {**record, "state": "failed", "error": f"{type(exc).__name__}: {message}",
                              "finished_at": time.time(), "seconds": time.time() - started})
        print(f"FAILED task {spec['chunk']}: {type(exc).__name__}: {message}", file=sys.stderr, flush=True)
        raise
    finished = time.time()
    result = {**(store.report or {}), "started_at": started, "finished_at": finished}
    write_status(status, {**record, "state": "completed", "finished_at": finished, "seconds": finished - started,
                          "result": result})
    print(f"done task {spec['chunk']}: {result.get('scans')} scan(s), {result.get('prepared')} prepared, "
          f"{result.get('reused')} reused, {result.get('patterns')} patterns in {result.get('seconds', 0):.2f} s "
          f"({result.get('patterns_per_s', 0):.0f} patterns/s) -> {spec['store_dir']}", flush=True)
    return {"chunk": spec["chunk"], **result}


def infer_chunk(spec: dict[str, Any]) -> dict[str, Any]:
    """One array task: reconstruct each input of the chunk, skipping inputs already complete.

    Each input gets a status.json (job id, timing, error); outputs are written atomically by the inference
    workflow. A failing input does not stop the others; the task fails at the end if any input failed, so the
    scheduler shows it and ``retry`` picks it up.
    """
    from launcher.arrays import OUTPUT_FILE, input_state, write_input_status

    job_id = _job_id()
    done, failed, skipped = 0, [], 0
    loaded = None  # the bundle's (model, info), loaded by the first input and reused by the others
    for item in spec["items"]:
        output = Path(item["output"])
        if input_state(output)["state"] == "completed":
            skipped += 1
            print(f"skip {item['input']}: complete", flush=True)
            continue
        started = time.time()
        record = {"input": item["input"], "output": str(output), "job_id": job_id, "task": spec["chunk"],
                  "host": socket.gethostname(), "started_at": started}
        write_input_status(output, {**record, "state": "running"})
        try:
            loaded = _reconstruct(spec, item["input"], output, loaded)
        except Exception as exc:  # noqa: BLE001 - recorded per input; the task still fails at the end
            message = one_line(exc)
            write_input_status(output, {**record, "state": "failed", "error": f"{type(exc).__name__}: {message}",
                                        "finished_at": time.time(), "seconds": time.time() - started})
            failed.append(item["input"])
            print(f"FAILED {item['input']}: {type(exc).__name__}: {message}", file=sys.stderr, flush=True)
            continue
        write_input_status(output, {**record, "state": "completed", "finished_at": time.time(),
                                    "seconds": time.time() - started, "result": str(output / OUTPUT_FILE)})
        done += 1
        print(f"done {item['input']} -> {output} ({time.time() - started:.1f} s)", flush=True)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(spec['items'])} input(s) failed: {', '.join(failed)}")
    return {"chunk": spec["chunk"], "done": done, "skipped": skipped}


def _reconstruct(spec: dict[str, Any], input_path: str, output: Path, loaded: Any = None) -> Any:
    """Reconstruct one input; returns the loaded bundle for the chunk's next input."""
    from ptycho.config.config import PyTorchExecutionConfig
    from ptycho.workflows.inference import run_inference
    from ptycho_torch.config_factory import create_inference_payload

    execution = PyTorchExecutionConfig.from_dict(spec["execution"])
    payload = create_inference_payload(spec["model_path"], input_path, output, spec["overrides"], execution)
    return run_inference(payload, loaded)["loaded"]


def _chunk_from_spec(spec: dict[str, Any], index: Optional[int]) -> dict[str, Any]:
    chosen = index if index is not None else int(os.environ["SLURM_ARRAY_TASK_ID"])
    for chunk in spec["chunks"]:
        if chunk["chunk"] == chosen:
            return chunk
    raise SystemExit(f"rank_entry: no chunk {chosen} in the spec")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m launcher.rank_entry --spec SPEC.json [--chunk I]`` (the plain sbatch templates' entry)."""
    parser = argparse.ArgumentParser(prog="python -m launcher.rank_entry")
    parser.add_argument("--spec", type=Path, required=True, help="spec.json of the run directory")
    parser.add_argument("--chunk", type=int, default=None,
                        help="array chunk (default: SLURM_ARRAY_TASK_ID)")
    args = parser.parse_args(argv)
    spec = read_json(args.spec)
    run: Callable[[dict[str, Any]], Any]
    if spec["kind"] == "train":
        run, arg = train_rank, spec
    else:
        run, arg = run_chunk, _chunk_from_spec(spec, args.chunk)
    run(arg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
