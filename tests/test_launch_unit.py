"""ptycho-launch pure logic: planner, validation rules, profiles, chunking, manifest, fingerprint check, quoting.

Fakes appear only where the function's job is parsing a scheduler's answer; everything here is also exercised
end to end on the real Slurm cluster in test_launch_run.py.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import arrays, submit
from launcher.errors import LaunchError
from launcher.plan import SRUN_ARGS, Resources, normalise_strategy, placement_of, plan_array, plan_training
from launcher.profiles import known_profiles, load_profile
from launcher.rank_entry import PayloadMismatchError, verify_fingerprints
from launcher.rundir import claim_run_dir, update_run
from launcher.validate import check_world, check_writable_dir, parse_time_minutes
from ptycho.config.config import PyTorchExecutionConfig
from ptycho_torch.trainer_args import trainer_arguments


# ------------------------------------------------------------------------------------------------- planner
@pytest.mark.parametrize("nodes,devices,accelerator,gpus", [(1, 1, "cpu", 0), (2, 2, "cpu", 0), (4, 8, "gpu", 8)])
def test_plan_derives_slurm_request_and_trainer_from_one_config(nodes, devices, accelerator, gpus):
    strategy = "ddp" if nodes * devices > 1 else "auto"
    execution = PyTorchExecutionConfig(nodes=nodes, n_devices=devices, accelerator=accelerator, strategy=strategy,
                                       precision="bf16-mixed")
    plan = plan_training(execution, Resources(partition="p", time_min=30, mem="8G"), "slurm")
    assert plan.trainer == trainer_arguments(execution)
    assert plan.slurm["nodes"] == plan.trainer["num_nodes"] == nodes
    assert plan.slurm["ntasks_per_node"] == plan.trainer["devices"] == devices
    assert plan.slurm.get("gpus_per_node", 0) == gpus
    assert plan.slurm["srun_args"] == SRUN_ARGS == ["--kill-on-bad-exit=1"]
    assert plan.slurm["time"] == plan.local["timeout_min"] == 30  # LocalExecutor always gets a timeout
    assert plan.trainer["precision"] == "bf16-mixed"
    json.dumps(plan.to_dict())  # JSON-serialisable
    assert type(plan).from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_plan_array_caps_parallelism_at_task_count():
    plan = plan_array("infer", "cpu", Resources(array_parallelism=8, hold=True), "slurm", array_tasks=3)
    assert plan.slurm["array_parallelism"] == 3 and plan.local["max_workers"] == 3
    assert plan.slurm["additional_parameters"] == {"hold": True}
    assert plan.slurm["ntasks_per_node"] == 1 and "gpus_per_node" not in plan.slurm
    assert plan_array("infer", "gpu", Resources(), "slurm", 2).slurm["gpus_per_node"] == 1


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "ddp_spawn"])
def test_one_rank_with_distributed_strategy_runs_as_auto_with_notice(strategy):
    overrides = {"strategy": strategy, "n_devices": 1, "nodes": 1}
    notice = normalise_strategy(overrides)
    assert overrides["strategy"] == "auto"
    assert notice.startswith("notice:") and "'auto'" in notice and "\n" not in notice
    many = {"strategy": "ddp", "n_devices": 2}
    assert normalise_strategy(many) is None and many["strategy"] == "ddp"


@pytest.mark.parametrize("args,fragment", [
    (("slurm", 1, 2, "fsdp", "cpu"), "fsdp needs --accelerator gpu"),
    (("slurm", 2, 1, "auto", "cpu"), "--nodes 2 needs --strategy ddp or fsdp"),
    (("local", 1, 2, "auto", "cpu"), "needs --strategy ddp or fsdp"),
    (("slurm", 1, 2, "ddp_spawn", "cpu"), "ddp_spawn is not used"),
    (("debug", 1, 2, "ddp", "cpu"), "--cluster debug runs one process"),
    (("local", 2, 1, "ddp", "cpu"), "--cluster local runs on this machine only"),
])
def test_world_rules_reject_with_one_line(args, fragment):
    with pytest.raises(LaunchError, match=None) as info:
        check_world(*args)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_more_nodes_than_the_partition_has_is_rejected():
    with pytest.raises(LaunchError, match="only 2 node"):
        check_world("slurm", 3, 1, "ddp", "cpu", available_nodes=2)
    check_world("slurm", 2, 2, "ddp", "cpu", available_nodes=2)


@pytest.mark.parametrize("text,minutes", [("90", 90), ("01:30:00", 90), ("1:00:01", 61), ("5:30", 6),
                                          ("1-02", 1560), ("2-00:30:00", 2910)])
def test_time_accepts_minutes_and_hms(text, minutes):
    assert parse_time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "0", "1h", "abc", "00:00:00"])
def test_time_rejects_nonsense(text):
    with pytest.raises(LaunchError, match="--time"):
        parse_time_minutes(text)


# ------------------------------------------------------------------------------------------------- profiles
def test_shipped_profiles_load_and_unknown_lists_them(tmp_path):
    names = known_profiles()
    assert {"generic-cpu", "gpu-a100-example", "ci"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert all(isinstance(line, str) for line in profile.get("setup", []))
    with pytest.raises(LaunchError) as info:
        load_profile("no-such-site")
    assert "known profiles:" in str(info.value) and "generic-cpu" in str(info.value)
    bad = tmp_path / "typo.toml"
    bad.write_text('partiton = "gpu"\n')
    with pytest.raises(LaunchError, match="unknown key 'partiton'"):
        load_profile(str(bad))
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"gpus_per_node": "four"}')
    with pytest.raises(LaunchError, match="gpus_per_node has the wrong type"):
        load_profile(str(wrong))


# ------------------------------------------------------------------------------------------------- arrays
def test_chunks_cover_inputs_in_order_and_respect_max_array_size():
    chunks = arrays.make_chunks(10, 3)
    assert chunks == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert arrays.split_arrays(range(4), 1001) == [[0, 1, 2, 3]]
    assert arrays.split_arrays(range(5), 2) == [[0, 1], [2, 3], [4]]
    assert all(len(g) <= 2 for g in arrays.split_arrays(range(5), 2))
    assert arrays.split_arrays([], 10) == []
    with pytest.raises(LaunchError, match="--chunk-size"):
        arrays.make_chunks(3, 0)


def test_max_array_size_is_read_from_scontrol(monkeypatch):
    text = "Configuration data as of ...\nMaxArraySize            = 17\nMaxJobCount = 10000\n"
    monkeypatch.setattr(submit, "slurm_command", lambda args, timeout=30.0: text)
    assert submit.max_array_size() == 17


def test_output_dirs_never_collide(tmp_path):
    from ptycho.corpus.spec import output_dirs

    dirs = output_dirs([Path("/a/scan.npz"), Path("/b/scan.npz"), Path("/c/other.npz")], tmp_path)
    assert [d.name for d in dirs] == ["scan", "scan-2", "other"]


def _item(tmp_path, name, state=None, with_output=True):
    out = tmp_path / name
    if state:
        arrays.write_input_status(out, {"state": state, "error": "DataContractError: bad" if state == "failed"
                                        else None, "job_id": "7_0"})
        if with_output and state == "completed":
            (out / arrays.OUTPUT_FILE).write_bytes(b"x")
    return {"input": f"/in/{name}.npz", "output": str(out)}


def test_manifest_aggregates_input_status_and_scheduler_state(tmp_path):
    chunks = [
        {"chunk": 0, "items": [_item(tmp_path, "a", "completed"), _item(tmp_path, "b", "completed")]},
        {"chunk": 1, "items": [_item(tmp_path, "c", "failed")]},
        {"chunk": 2, "items": [_item(tmp_path, "d")]},
        {"chunk": 3, "items": [_item(tmp_path, "e", "completed", with_output=False)]},  # output vanished
        {"chunk": 4, "items": [_item(tmp_path, "f")]},
    ]
    rows = arrays.aggregate(chunks, {0: "COMPLETED", 1: "FAILED", 2: "CANCELLED", 3: "COMPLETED", 4: "RUNNING"})
    states = {r["task"]: r["state"] for r in rows}
    assert states == {0: "completed", 1: "failed", 2: "cancelled", 3: "missing", 4: "running"}
    assert "c.npz: DataContractError: bad" in rows[1]["error"]
    path = arrays.write_manifest(tmp_path, rows)
    assert [json.loads(line)["task"] for line in path.read_text().splitlines()] == [0, 1, 2, 3, 4]
    assert [json.loads(line) for line in path.read_text().splitlines()] == json.loads(json.dumps(rows))
    with pytest.raises(LaunchError, match="still queued or running"):
        arrays.chunks_to_retry(rows)
    assert arrays.chunks_to_retry([r for r in rows if r["task"] != 4]) == [1, 2, 3]


def test_fingerprint_mismatch_names_both_hashes():
    assert verify_fingerprints([(1, "a" * 64), (0, "a" * 64)]) == "a" * 64
    with pytest.raises(PayloadMismatchError) as info:
        verify_fingerprints([(0, "a" * 64), (1, "a" * 64), (2, "b" * 64)])
    assert f"rank 0 sha256 {'a' * 64}" in str(info.value) and f"rank 2 sha256 {'b' * 64}" in str(info.value)


def test_fingerprint_mismatch_aborts_a_real_two_process_gloo_group(tmp_path):
    """Two real processes, one gloo group: each gathers both hashes and aborts naming both."""
    code = (
        "import sys; from launcher.rank_entry import _gather_fingerprints, verify_fingerprints\n"
        "rank = int(sys.argv[1]); port = int(sys.argv[2])\n"
        "got = _gather_fingerprints(('a' if rank == 0 else 'b') * 64, rank, 2, rank, ('127.0.0.1', port), 'cpu', 60)\n"
        "verify_fingerprints(got)\n"
    )
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(r), str(port)], stderr=subprocess.PIPE, text=True,
                              env=env) for r in (0, 1)]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode != 0
        assert f"rank 0 sha256 {'a' * 64} != rank 1 sha256 {'b' * 64}" in err


# ------------------------------------------------------------------------------------------------- files
def test_run_dir_is_never_reused(tmp_path):
    claimed = claim_run_dir(tmp_path / "r")
    assert (claimed / "run.json").exists()
    with pytest.raises(LaunchError, match="already holds files"):
        claim_run_dir(tmp_path / "r")
    update_run(claimed, kind="train", submissions=[{"job_id": "1"}])
    data = update_run(claimed, state="x", submissions=[{"job_id": "2"}])
    assert [s["job_id"] for s in data["submissions"]] == ["1", "2"] and data["kind"] == "train"


def test_run_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        run = claim_run_dir(tmp_path / "r")
        update_run(run, kind="train")
        assert (run / "run.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_unwritable_output_dir_is_rejected(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LaunchError, match="--output_dir .*not writable|not a writable directory"):
        check_writable_dir(blocker / "out", "--output_dir")
    with pytest.raises(LaunchError, match="not a writable directory"):
        check_writable_dir(blocker / "out", "--output_dir", create=False)


# ------------------------------------------------------------------------------------------------- quoting
EVIL = "evil dir; touch PWNED $(touch PWNED2) `touch PWNED3` 'q\" $HOME"


def test_sbatch_script_quotes_hostile_paths(tmp_path):
    """Run the rendered script's shell part with a fake srun that records its arguments: the run directory must
    arrive as one argument, byte for byte, and nothing in it may execute."""
    run_dir = tmp_path / EVIL / "run"
    plan = plan_training(PyTorchExecutionConfig(n_devices=2, strategy="ddp", accelerator="cpu"), Resources(),
                         "slurm")
    script = submit.render_sbatch(plan, run_dir)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nfor a in "$@"; do printf "%s\\n" "$a"; done > "$ARGS_OUT"\n')
    (bin_dir / "srun").chmod(0o755)
    (tmp_path / "job.sh").write_text(script)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ARGS_OUT": str(tmp_path / "args.txt")}
    subprocess.run(["bash", str(tmp_path / "job.sh")], cwd=tmp_path, env=env, check=True, timeout=30)
    args = (tmp_path / "args.txt").read_text().splitlines()
    assert str(run_dir / "submitit") in args
    assert args[args.index("--output") + 1] == str(run_dir / "submitit" / "%j_%t_log.out")
    assert not list(tmp_path.glob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))
    for line in script.splitlines():
        if line.startswith("#SBATCH --output="):
            assert shlex.split(line.split("=", 1)[1]) == [str(run_dir / "submitit" / "%j_0_log.out")]


def test_plain_template_quotes_every_substituted_value(tmp_path):
    """The reviewable train/array scripts: hostile run directory, fake srun recording its arguments."""
    from launcher.templates import render_job_script, render_template

    run_dir = tmp_path / EVIL / "run"
    execution = PyTorchExecutionConfig(n_devices=2, strategy="ddp", accelerator="cpu")
    resources = Resources(partition="p$(touch PWNED4)", setup=["export FOO=1"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nfor a in "$@"; do printf "%s\\n" "$a"; done > "$ARGS_OUT"\n')
    (bin_dir / "srun").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ARGS_OUT": str(tmp_path / "args.txt")}
    for plan in (plan_training(execution, resources, "slurm"), plan_array("infer", "cpu", resources, "slurm", 3)):
        script = render_job_script(plan, run_dir)
        assert "#SBATCH --partition='p$(touch PWNED4)'" in script and "export FOO=1" in script
        (tmp_path / "job.sh").write_text(script)
        subprocess.run(["bash", str(tmp_path / "job.sh")], cwd=tmp_path, env=env, check=True, timeout=30)
        args = (tmp_path / "args.txt").read_text().splitlines()
        assert args[args.index("--spec") + 1] == str(run_dir / "spec.json")
        assert "--kill-on-bad-exit=1" in args
    assert "#SBATCH --array=0-2%3" in script
    assert not list(tmp_path.glob("PWNED*"))
    with pytest.raises(LaunchError, match="no value for"):
        render_template("{{missing}}", {})


def test_input_list_skips_comments_and_resolves_relative_to_the_list(tmp_path):
    """--input-list is a corpus manifest (ptycho.corpus.spec.read_manifest), whatever its extension."""
    from ptycho.corpus.spec import read_manifest
    from ptycho.errors import PtychoInputError

    listing = tmp_path / "lists" / "inputs.list"
    listing.parent.mkdir()
    for name in ("lists/a.npz", "b.npz", "c.npz"):
        (tmp_path / name).write_bytes(b"")
    listing.write_text(f"# scans\n\na.npz\n{tmp_path / 'b.npz'}\n  ../c.npz  \n")
    assert read_manifest(listing) == [tmp_path / "lists" / "a.npz", tmp_path / "b.npz", tmp_path / "c.npz"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(PtychoInputError, match="lists no scan files"):
        read_manifest(tmp_path / "empty.txt")
    with pytest.raises(PtychoInputError, match="manifest not found"):
        read_manifest(tmp_path / "missing.txt")


def test_launcher_commands_import_no_backend():
    """Validation runs on login nodes: parsing and preparing a launch must not pay for torch or TensorFlow."""
    mods = ("launcher.cli, launcher.train_command, launcher.infer_command, launcher.prepare_command, "
            "launcher.array_jobs, launcher.corpus_check, launcher.watch, launcher.plan")
    code = (f"import sys, {mods}; bad = [m for m in ('torch', 'tensorflow', 'lightning') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_placement_of_a_saved_plan_rebuilds_where_its_jobs_ran():
    """A sweep retry's selector runs where the sweep did: partition, account, QoS, time, memory, constraint and the
    user's setup lines come back from the saved plan (the launcher's own thread line is added again by planning)."""
    res = Resources(partition="gpu", account="proj", qos="high", time_min=45, mem="8G", constraint="a100",
                    setup=["module load cuda"], hold=True)
    placed = placement_of(plan_array("infer", "cpu", res, "slurm", 2), "ptycho-select")
    assert (placed.partition, placed.account, placed.qos, placed.time_min, placed.mem, placed.constraint) == (
        "gpu", "proj", "high", 45, "8G", "a100")
    assert placed.setup == ["module load cuda"] and placed.job_name == "ptycho-select" and not placed.hold
    again = plan_array("select", "cpu", placed, "slurm", 1).slurm
    assert again["setup"] == plan_array("infer", "cpu", res, "slurm", 2).slurm["setup"]
