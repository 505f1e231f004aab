"""Run a list of configs, resumably, spreading independent runs over workers.

A run whose complete result file exists (same config hash) is skipped, so a
sweep killed at any moment restarts where it stopped. Finished runs are never
repeated, and the run that was interrupted starts over. Result files are
written atomically, so the interrupted run left no partial result behind.

Workers are processes. With GPUs, each worker owns one visible GPU; on a CPU
each worker owns `cpu_count // jobs` threads (one thread per worker is fastest
for the CPU profile's small model, whose matrices are too small to split).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from experiments.results import is_complete
from experiments.vit.config import RunConfig
from experiments.vit.train import RunEnvironment

logger = logging.getLogger(__name__)

STALE_TEMPORARY_SECONDS = 300


@dataclass
class SweepSummary:
    """Counts of one sweep; `failed` lists (config, error message) pairs."""

    total: int = 0
    skipped: int = 0
    finished: int = 0
    failed: list[tuple[RunConfig, str]] = field(default_factory=list)


def result_directory(env: RunEnvironment, config: RunConfig) -> Path:
    return Path(env.output_root) / config.profile / config.experiment


def pending_runs(runs: list[RunConfig], env: RunEnvironment) -> list[RunConfig]:
    """Return the runs without a complete result file, in order."""
    return [config for config in runs if not is_complete(result_directory(env, config), config.to_dict())]


def _remove_stale_temporaries(directories: set[Path]) -> None:
    # A write killed between mkstemp and rename leaves a `.tmp-*.json` file, which no
    # reader takes for a result. Remove old ones only, because recent ones may belong to a live sweep.
    now = time.time()
    for directory in directories:
        for path in directory.glob(".tmp-*.json") if directory.is_dir() else ():
            if now - path.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                path.unlink(missing_ok=True)
                logger.info("removed stale temporary file %s", path)


def check_inputs(runs: list[RunConfig], env: RunEnvironment) -> None:
    """Raise MissingInputError before any run starts if a dataset or checkpoint is missing."""
    from experiments.vit import backbones, data

    if env.download:
        return
    for name in sorted({config.dataset for config in runs if config.dataset in data.SPECS}):
        if env.data_root is None:
            raise ValueError(f"dataset {name!r} needs --data-root")
        data.check_present(name, env.data_root)
    for key in sorted({config.backbone for config in runs if config.backbone in backbones.PAPER_BACKBONES}):
        if env.checkpoint_dir is None:
            raise ValueError(f"backbone {key!r} needs --checkpoint-dir")
        backbones.checkpoint_file(backbones.get_backbone(key), env.checkpoint_dir)


_worker_device = "cpu"


def _init_worker(devices, threads: int, log_level: int) -> None:
    import torch

    global _worker_device
    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s [%(process)d] %(message)s")
    _worker_device = devices.get()
    torch.set_num_threads(threads)
    if _worker_device.startswith("cuda"):
        torch.cuda.set_device(_worker_device)


def _run_in_worker(config: RunConfig, env: RunEnvironment) -> str:
    from experiments.vit.train import run

    env.device = _worker_device
    env.progress = False  # interleaved bars from several workers are unreadable; epoch lines remain
    return str(run(config, env))


def _pretrain_in_worker(name: str, directory: str | None) -> str:
    from experiments.vit import pretrain

    return str(pretrain.ensure_pretrained(name) if directory is None else pretrain.ensure_pretrained(name, Path(directory)))


def worker_devices(env: RunEnvironment, jobs: int) -> list[str]:
    """Return one device per worker: one GPU each when GPUs are used, else the CPU."""
    if env.device.startswith("cuda"):
        import torch

        count = torch.cuda.device_count()
        if jobs > count:
            raise ValueError(f"invalid jobs {jobs}: only {count} GPU(s) are visible; use at most one job per GPU")
        return [f"cuda:{index}" for index in range(jobs)]
    return ["cpu"] * jobs


def run_sweep(runs: list[RunConfig], env: RunEnvironment, jobs: int = 1) -> SweepSummary:
    """Run every config of `runs` that has no complete result yet; return the counts."""
    if jobs < 1:
        raise ValueError(f"invalid jobs {jobs}: must be >= 1")
    summary = SweepSummary(total=len(runs))
    _remove_stale_temporaries({result_directory(env, config) for config in runs})
    todo = pending_runs(runs, env)
    summary.skipped = len(runs) - len(todo)
    logger.info("%d runs: %d already complete, %d to run with %d worker(s)", len(runs), summary.skipped,
                len(todo), jobs)
    if not todo:
        return summary

    check_inputs(todo, env)
    from experiments.vit.backbones import CPU_BACKBONES

    backbones = sorted({config.backbone for config in todo if config.backbone in CPU_BACKBONES})
    directory = None if env.checkpoint_dir is None else str(env.checkpoint_dir)
    if jobs == 1:
        from experiments.vit.train import run

        for name in backbones:
            _pretrain_in_worker(name, directory)
        for index, config in enumerate(todo, 1):
            logger.info("run %d/%d: %s", index, len(todo), _describe(config))
            try:
                run(config, env)
                summary.finished += 1
            except (ValueError, FloatingPointError, RuntimeError) as error:
                logger.error("run failed: %s: %s", _describe(config), error)
                summary.failed.append((config, str(error)))
        return summary

    devices = worker_devices(env, jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs) if devices[0] == "cpu" else 1
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    for device in devices:
        queue.put(device)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                             initargs=(queue, threads, logging.getLogger().getEffectiveLevel())) as pool:
        # Pretrain the CPU profile's backbones first, one per worker, so no two runs race to create one.
        for future in [pool.submit(_pretrain_in_worker, name, directory) for name in backbones]:
            future.result()
        futures = {pool.submit(_run_in_worker, config, env): config for config in todo}
        for done, future in enumerate(as_completed(futures), 1):
            config = futures[future]
            try:
                future.result()
                summary.finished += 1
                logger.info("finished %d/%d: %s", done, len(todo), _describe(config))
            except Exception as error:  # a worker's failure must not stop the other runs
                logger.error("run failed: %s: %s: %s", _describe(config), type(error).__name__, error)
                summary.failed.append((config, f"{type(error).__name__}: {error}"))
    return summary


def _describe(config: RunConfig) -> str:
    parts = [config.experiment, config.backbone, config.dataset, config.method, config.blocks, f"r{config.rank}",
             f"seed{config.seed}"]
    if config.modification != "none":
        parts.append(config.modification)
    if config.switch_blocks:
        parts.append(f"switch->{config.switch_blocks}@{config.switch_epoch}")
    return " ".join(parts)
