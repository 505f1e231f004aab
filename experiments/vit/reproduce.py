"""`make reproduce` for the ViT half: Tables 1, 2, 5, 7, 8 and Figures 1, 3.

Profiles:
- `paper_scale` (default when a GPU is visible): ViT-B/16 checkpoints on CIFAR-100,
  SVHN and Food-101, the paper's protocol; needs the datasets and checkpoints on disk.
- `cpu_profile` (default without a GPU): the small real version of Tables 1 and 2 and
  Figure 1 on scikit-learn's digits (see `digits.py`, `pretrain.py`), which is what runs
  without --table or --figure. Tables 5, 7 and 8 have CPU-profile configs too; they run
  only when asked for, and their results are not committed.

Results go to `results/<profile>/<experiment>/<config hash>.json`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from experiments.results import RESULTS_ROOT, REPO_ROOT

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.reproduce --table N|--figure N", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("auto", "paper_scale", "cpu_profile"), default="auto",
                        help="paper_scale or cpu_profile; auto picks paper_scale when CUDA is available")
    parser.add_argument("--config", type=Path, help="run this config file instead of a table or figure")
    parser.add_argument("--data-root", type=Path,
                        default=Path(os.environ.get("BLOCKRANK_DATA", REPO_ROOT / "data")),
                        help="folder holding cifar100/, svhn/ and food101/ (default $BLOCKRANK_DATA or ./data)")
    parser.add_argument("--checkpoint-dir", type=Path,
                        help="folder holding the timm checkpoints (default $BLOCKRANK_CHECKPOINTS or ./checkpoints); "
                             "in the CPU profile, the pretrained digits backbones (default "
                             "results/cpu_profile/vit_backbones)")
    parser.add_argument("--download", action="store_true",
                        help="let torchvision and the Hugging Face Hub download missing datasets and checkpoints")
    parser.add_argument("--no-verify-checksums", action="store_true",
                        help="check that CIFAR-100 / SVHN files exist instead of their MD5 sums")
    parser.add_argument("--output-root", type=Path, default=RESULTS_ROOT, help="results folder (default results/)")
    parser.add_argument("--jobs", type=int, help="parallel runs (default: one per GPU, or one per CPU core)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--num-workers", type=int, default=8, help="data-loader processes per run at paper scale")
    parser.add_argument("--epochs", type=int, help="override the epochs of every run")
    parser.add_argument("--seeds", help="comma-separated seeds replacing each config's seeds, e.g. 0,1,2")
    parser.add_argument("--save-adapters", choices=("yes", "no", "auto"), default="auto",
                        help="save adapters and head of each run next to its result (auto: at paper scale only)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and whether each is complete")
    parser.add_argument("--quiet", action="store_true", help="no batch progress bars")
    return parser


def main(table: str | None = None, figure: str | None = None, extra=()) -> int:
    """Run one ViT table or figure (or the profile's default set); return an exit status."""
    extra = list(extra)
    if extra[:1] == ["--"]:  # `python -m experiments.reproduce --table 1 -- --dry-run` passes the separator on
        extra = extra[1:]
    args = build_parser().parse_args(extra)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch

    from experiments.vit import distributed, plans, sweep
    from experiments.vit.train import RunEnvironment

    cuda = torch.cuda.is_available()
    profile = args.profile
    if profile == "auto":
        profile = "paper_scale" if cuda else "cpu_profile"
    device = args.device or ("cuda" if cuda and profile == "paper_scale" else "cpu")
    if device.startswith("cuda") and not cuda:
        print(f"invalid --device {device}: CUDA is not available; use --device cpu", file=sys.stderr)
        return 2

    overrides = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.seeds:
        try:
            overrides["seed"] = [int(seed) for seed in args.seeds.split(",")]
        except ValueError:
            print(f"invalid --seeds {args.seeds!r}: give comma-separated integers such as 0,1,2", file=sys.stderr)
            return 2

    try:
        if args.config is not None:
            names = [args.config]
        elif table is not None or figure is not None:
            names = [plans.plan_name(table, figure)]
        else:
            names = list(plans.DEFAULT_PLANS[profile])
        loaded = [plans.load_plan(name, profile, overrides) for name in names]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    checkpoint_dir = args.checkpoint_dir
    if checkpoint_dir is None and profile == "paper_scale":
        checkpoint_dir = Path(os.environ.get("BLOCKRANK_CHECKPOINTS", REPO_ROOT / "checkpoints"))
    env = RunEnvironment(
        output_root=args.output_root, data_root=args.data_root,
        checkpoint_dir=checkpoint_dir,
        download=args.download, verify_checksums=not args.no_verify_checksums, device=device,
        num_workers=args.num_workers if profile == "paper_scale" else 0, progress=not args.quiet,
        save_adapters=args.save_adapters == "yes" or (args.save_adapters == "auto" and profile == "paper_scale"),
    )
    runs = [config for plan in loaded for config in plan.runs]
    if args.dry_run:
        pending = set(id(config) for config in sweep.pending_runs(runs, env))
        for config in runs:
            print(f"{'todo' if id(config) in pending else 'done'}  {sweep._describe(config)}")
        print(f"{len(runs)} runs, {len(pending)} to do ({profile})")
        return 0

    jobs = args.jobs or (torch.cuda.device_count() if device.startswith("cuda") else (os.cpu_count() or 1))
    if distributed.is_distributed():
        jobs = 1  # under torchrun / accelerate launch all processes train each run together
    for plan in loaded:
        logger.info("%s (%s, %d runs): %s", plan.name, profile, len(plan.runs), plan.description)
    try:
        summary = sweep.run_sweep(runs, env, jobs=jobs)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    logger.info("done: %d runs, %d skipped (complete), %d finished, %d failed", summary.total, summary.skipped,
                summary.finished, len(summary.failed))
    for config, message in summary.failed:
        print(f"failed: {sweep._describe(config)}: {message}", file=sys.stderr)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main(extra=sys.argv[1:]))
