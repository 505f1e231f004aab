"""Sweeps resume after a kill: nothing finished is lost or rerun, nothing half-written is read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments.results import REPO_ROOT, config_hash, iter_results
from experiments.vit import plans, pretrain, sweep
from experiments.vit.train import RunEnvironment

CONFIG = {
    "experiment": "resume_test",
    "description": "six one-epoch runs on the digits",
    "reported_metric": "test_accuracy_last",
    "cpu_profile": {
        "base": {"backbone": "digits_sup", "dataset": "digits", "method": "lora", "rank": 1, "epochs": 1,
                 "batch_size": 64, "image_size": 8},
        "grids": [{"blocks": ["Q", "K", "V", "O", "QV", "OV"], "seed": [0]}],
    },
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("vit_sweep")
    config_file = base / "resume_test.json"
    config_file.write_text(json.dumps(CONFIG))
    pretrain.pretrain("digits_sup", base / "backbones", epochs=1)
    return base, config_file


def snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in directory.glob("*.json")}


def test_killed_sweep_resumes_without_loss_or_repeat(setup):
    base, config_file = setup
    output = base / "results"
    directory = output / "cpu_profile" / "resume_test"
    command = [sys.executable, "-m", "experiments.vit.reproduce", "--config", str(config_file),
               "--profile", "cpu_profile", "--output-root", str(output), "--checkpoint-dir", str(base / "backbones"),
               "--jobs", "1", "--quiet"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list(directory.glob("[0-9a-f]*.json")):
        assert process.poll() is None, f"sweep exited early: {process.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "no result file appeared within 240 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()

    before = snapshot(directory)
    plan = plans.load_plan(config_file, "cpu_profile")
    assert 1 <= len(before) < len(plan.runs), "the kill came too late to interrupt the sweep"

    env = RunEnvironment(output_root=output, checkpoint_dir=base / "backbones", progress=False)
    summary = sweep.run_sweep(list(plan.runs), env, jobs=1)

    assert summary.skipped == len(before)
    assert summary.finished == len(plan.runs) - len(before)
    assert not summary.failed
    after = snapshot(directory)
    for name, state in before.items():
        assert after[name] == state, f"finished result {name} was rewritten"
    hashes = sorted(record["config_hash"] for record in iter_results(directory))
    assert hashes == sorted(config_hash(config.to_dict()) for config in plan.runs)


def test_corrupt_and_temporary_files_are_not_results(setup):
    base, config_file = setup
    output = base / "results"
    directory = output / "cpu_profile" / "resume_test"
    plan = plans.load_plan(config_file, "cpu_profile")
    env = RunEnvironment(output_root=output, checkpoint_dir=base / "backbones", progress=False)
    sweep.run_sweep(list(plan.runs), env, jobs=1)  # complete whatever the previous test left

    damaged = directory / f"{config_hash(plan.runs[0].to_dict())}.json"
    damaged.write_text(damaged.read_text()[:50])  # a torn file, as a non-atomic writer could leave
    stale = directory / ".tmp-abandoned.json"
    stale.write_text("{")
    old = time.time() - 2 * sweep.STALE_TEMPORARY_SECONDS
    os.utime(stale, (old, old))

    assert [config.blocks for config in sweep.pending_runs(list(plan.runs), env)] == [plan.runs[0].blocks]
    summary = sweep.run_sweep(list(plan.runs), env, jobs=2)
    assert (summary.skipped, summary.finished, summary.failed) == (len(plan.runs) - 1, 1, [])
    assert json.loads(damaged.read_text())["status"] == "complete"
    assert not stale.exists()


def test_missing_dataset_stops_before_any_run(tmp_path, capsys):
    from experiments.vit import reproduce

    status = reproduce.main(table="1", extra=["--profile", "paper_scale", "--device", "cpu", "--data-root",
                                              str(tmp_path / "data"), "--checkpoint-dir", str(tmp_path / "ckpt"),
                                              "--output-root", str(tmp_path / "out"), "--jobs", "1"])
    assert status == 2
    error = capsys.readouterr().err
    assert "dataset 'cifar100' not found" in error
    assert str(tmp_path / "data" / "cifar100") in error
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_runs(capsys, tmp_path):
    from experiments.vit import reproduce

    status = reproduce.main(figure="1", extra=["--profile", "cpu_profile", "--dry-run", "--output-root",
                                               str(tmp_path)])
    assert status == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "21 runs, 21 to do (cpu_profile)"
    assert sum("switch->O@3" in line for line in lines) == 3


def test_invalid_table_rejected(capsys):
    from experiments.vit import reproduce

    assert reproduce.main(table="3", extra=["--profile", "cpu_profile", "--dry-run"]) == 2
    assert "invalid table '3'" in capsys.readouterr().err


def test_torchrun_trains_one_run_data_parallel(setup, tmp_path):
    """Two Gloo processes under torchrun share each run and write one result, from rank 0."""
    base, _ = setup
    config = {**CONFIG, "experiment": "ddp_test"}
    config["cpu_profile"] = {**CONFIG["cpu_profile"], "grids": [{"blocks": ["O"], "seed": [0]}]}
    config_file = tmp_path / "ddp_test.json"
    config_file.write_text(json.dumps(config))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "experiments.vit.reproduce", "--config", str(config_file), "--profile", "cpu_profile",
               "--output-root", str(tmp_path / "out"), "--checkpoint-dir", str(base / "backbones"), "--quiet"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]

    records = list(iter_results(tmp_path / "out" / "cpu_profile" / "ddp_test"))
    assert len(records) == 1
    assert records[0]["world_size"] == 2
    assert records[0]["history"][0]["train_loss"] > 0
    assert finished.stderr.count("finished ddp_test") == 1  # only rank 0 writes and logs the result
