"""`make reproduce` for the LLaMA tables (3, 4) and figures (2, 4, 5, 6): check resources, run what is missing.

Paths come from options or environment variables (the Makefile passes no options):

    BLOCKRANK_LLAMA2_7B        folder of meta-llama/Llama-2-7b-hf        (--llama2-dir)
    BLOCKRANK_LLAMA3_8B        folder of meta-llama/Meta-Llama-3-8B      (--llama3-dir)
    BLOCKRANK_COMMONSENSE_DIR  folder with commonsense_170k.json and dataset/<name>/test.json (--data-dir)

A 7B run needs a GPU; without one, or without a path, nothing starts and every missing piece is
listed. Finished runs (a complete result file for the same config hash) are skipped, and a run
killed mid-way resumes from its last validation checkpoint. On several GPUs, pass --nproc N (or
launch this module with torchrun yourself); runs are data parallel over the N processes.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from experiments import results
from experiments.llama.configs import MODELS, paper_runs
from experiments.llama.data import TEST_SETS, missing_data_files
from experiments.llama.prompts import LOSS_MODES
from experiments.targeting import parse_blocks

logger = logging.getLogger(__name__)

DATA_VARIABLE = "BLOCKRANK_COMMONSENSE_DIR"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.llama.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", help="paper table: 3 (LLaMA2-7B) or 4 (LLaMA3-8B)")
    parser.add_argument("--figure", help="paper figure: 2, 4, 5 or 6")
    parser.add_argument("--llama2-dir", default=os.environ.get(MODELS["llama2-7b"].environment_variable),
                        help=f"LLaMA2-7B folder (default ${MODELS['llama2-7b'].environment_variable})")
    parser.add_argument("--llama3-dir", default=os.environ.get(MODELS["llama3-8b"].environment_variable),
                        help=f"LLaMA3-8B folder (default ${MODELS['llama3-8b'].environment_variable})")
    parser.add_argument("--data-dir", default=os.environ.get(DATA_VARIABLE),
                        help=f"commonsense data folder (default ${DATA_VARIABLE})")
    parser.add_argument("--allow-download", action="store_true",
                        help="load a model without a folder from the Hugging Face hub (needs network access "
                             "and HF_HUB_OFFLINE unset)")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="profile folder for result files (default results/paper_scale, or results/smoke "
                             "when a limit is set)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                        help="cpu is for small local models only; a 7B run on CPU takes weeks")
    parser.add_argument("--nproc", type=int, default=1, help="GPUs to use on this machine (starts torchrun)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="training seeds (default 42)")
    parser.add_argument("--blocks", nargs="+", help="run only these block sets of the table or figure, e.g. OV QV")
    parser.add_argument("--ranks", type=int, nargs="+", help="run only these ranks of the table or figure")
    parser.add_argument("--test-sets", nargs="+", choices=[test_set.name for test_set in TEST_SETS],
                        help="evaluate only these test sets (default: all eight)")
    parser.add_argument("--loss-mode", choices=LOSS_MODES, default="label",
                        help="label: loss on the response only (the paper); answer_only: the response is the "
                             "bare answer; whole: loss on the whole prompt (DoRA)")
    parser.add_argument("--micro-batch-size", type=int, default=16,
                        help="examples per forward pass; the batch of 16 is reached by accumulation")
    parser.add_argument("--eval-batch-size", type=int, default=1,
                        help="prompts per generate() call (1 in the reference; larger is faster, left-padded)")
    parser.add_argument("--train-limit", type=int, help="use only the first N training records (smoke run)")
    parser.add_argument("--test-limit", type=int, help="evaluate only the first N examples per test set")
    parser.add_argument("--max-steps", type=int, help="stop after N optimizer steps (smoke run)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and whether they are done, then exit")
    return parser


def model_source(args, model_key: str) -> str | None:
    folder = args.llama2_dir if model_key == "llama2-7b" else args.llama3_dir
    if folder:
        return folder
    return MODELS[model_key].hub_id if args.allow_download else None


def find_problems(args, model_keys: list[str]) -> list[str]:
    """Return one line per missing resource: GPU, model folders, data files."""
    import torch

    problems = []
    if args.device != "cpu" and not torch.cuda.is_available():
        problems.append("no GPU: torch.cuda.is_available() is False (the runs fine-tune 7B/8B models in bf16; "
                        "pass --device cpu only for small local models)")
    for key in model_keys:
        spec = MODELS[key]
        option = "--llama2-dir" if key == "llama2-7b" else "--llama3-dir"
        source = model_source(args, key)
        if source is None:
            problems.append(f"model folder for {key} not set: set {spec.environment_variable} or pass {option} "
                            f"(a local copy of {spec.hub_id}), or pass --allow-download")
        elif source != spec.hub_id and not (Path(source) / "config.json").is_file():
            problems.append(f"model folder {source} for {key} has no config.json; point {spec.environment_variable} "
                            f"at a local copy of {spec.hub_id}")
    if not args.data_dir:
        problems.append(f"data folder not set: set {DATA_VARIABLE} or pass --data-dir (a folder with "
                        "commonsense_170k.json and dataset/<name>/test.json from AGI-Edgerunners/LLM-Adapters)")
    elif not Path(args.data_dir).is_dir():
        problems.append(f"data folder {args.data_dir} does not exist")
    else:
        problems += missing_data_files(Path(args.data_dir))
    return problems


def _overrides(args) -> dict:
    overrides = {"loss_mode": args.loss_mode, "micro_batch_size": args.micro_batch_size,
                 "eval_batch_size": args.eval_batch_size}
    for name in ("train_limit", "test_limit", "max_steps", "test_sets"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    return overrides


def select_runs(runs, blocks: list[str] | None, ranks: list[int] | None):
    """Keep the runs whose block set (in any letter order) and rank were requested; None keeps all."""
    if blocks is not None:
        wanted = {frozenset(parse_blocks(block)) for block in blocks}
        runs = [run for run in runs if frozenset(run.blocks) in wanted]
    if ranks is not None:
        runs = [run for run in runs if run.rank in ranks]
    return runs


def _relaunch_with_torchrun(args, argv: list[str]) -> int:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "experiments.llama.reproduce", *argv]
    logger.info("starting %d processes: %s", args.nproc, " ".join(command))
    return subprocess.run(command, check=False).returncode


def main(table: str | None = None, figure: str | None = None, extra=()) -> int:
    """Run the LLaMA runs of one table or figure (all of them when both are None); return an exit status."""
    argv = list(extra)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if table is not None:
        argv = ["--table", str(table), *argv]
    if figure is not None:
        argv = ["--figure", str(figure), *argv]
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    try:
        runs = select_runs(paper_runs(args.table, args.figure, tuple(args.seeds), **_overrides(args)),
                           args.blocks, args.ranks)
    except ValueError as error:
        print(f"reproduce (LLaMA): {error}", file=sys.stderr)
        return 2
    if not runs:
        print(f"reproduce (LLaMA): no run matches --blocks {args.blocks} --ranks {args.ranks}", file=sys.stderr)
        return 2
    limited = any(getattr(args, name) is not None for name in ("train_limit", "test_limit", "max_steps",
                                                                "test_sets"))
    results_dir = args.results_dir or results.RESULTS_ROOT / ("smoke" if limited else "paper_scale")
    target = "all LLaMA runs"
    if args.table:
        target = f"table {args.table}"
    elif args.figure:
        target = f"figure {args.figure}"

    pending = [run for run in runs if not results.is_complete(results_dir / run.experiment, run.as_dict())]
    if args.dry_run:
        for run in runs:
            state = "todo" if run in pending else "done"
            print(f"{state}  {run.model}  blocks={run.blocks}  r={run.rank}  seed={run.seed}  "
                  f"{results.config_hash(run.as_dict())}")
        print(f"{len(runs) - len(pending)} of {len(runs)} runs done for {target} in {results_dir}")
        return 0
    if not pending:
        print(f"{target}: all {len(runs)} runs are complete in {results_dir}")
        return 0

    problems = find_problems(args, sorted({run.model for run in pending}))
    if problems:
        requested = args.table is not None or args.figure is not None
        lines = "\n".join(f"  - {problem}" for problem in problems)
        print(f"reproduce (LLaMA): cannot run {target} ({len(pending)} runs to do):\n{lines}", file=sys.stderr)
        if not requested:
            print("reproduce (LLaMA): skipped; the other experiments are unaffected", file=sys.stderr)
            return 0
        return 1

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _relaunch_with_torchrun(args, argv)
    return _run_all(pending, args, results_dir)


def _run_all(pending, args, results_dir: Path) -> int:
    from experiments.llama.distributed import close_distributed, init_distributed
    from experiments.llama.run import run_config

    context = init_distributed(args.device)
    failed = []
    try:
        for index, run in enumerate(pending, start=1):
            if context.is_main:
                logger.info("run %d of %d: %s blocks=%s r=%d seed=%d", index, len(pending), run.model,
                            run.blocks, run.rank, run.seed)
            try:
                run_config(run, model_path=model_source(args, run.model), data_dir=Path(args.data_dir),
                           results_dir=results_dir, context=context)
            except FloatingPointError as error:
                # A diverged run fails alike on every process (the loss is all-reduced), so all go on.
                logger.error("run %s blocks=%s r=%d seed=%d failed: %s", run.model, run.blocks, run.rank,
                             run.seed, error)
                failed.append(run)
    finally:
        close_distributed()
    if failed and context.is_main:
        print(f"reproduce (LLaMA): {len(failed)} of {len(pending)} runs failed; see the log", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(extra=sys.argv[1:]))
