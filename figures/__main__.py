"""`make figures`: regenerate the paper's tables and figures from result files, and the audit.

Usage: python -m figures [TARGET ...] [--profile NAME ...] [--results-root DIR] [--out DIR]
                         [--metric last|best]

TARGET is table1-5, table7, table8, figure1-6, audit or all (the default).
Outputs, per result profile: OUT/<profile>/tableN.{md,tex,csv} and
OUT/<profile>/figureN.{png,pdf}; the audit of the paper's own numbers goes to
OUT/audit.{md,json}. A profile without results still gets every output, with
each run marked missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from experiments.results import REPO_ROOT, RESULTS_ROOT, code_version
from figures import tables
from figures.collect import METRICS, PROFILES, load_records

log = logging.getLogger("figures")

TABLE_TARGETS = tuple(tables.TABLES)
FIGURE_TARGETS = ("figure1", "figure2", "figure3", "figure4", "figure5", "figure6")
TARGETS = TABLE_TARGETS + FIGURE_TARGETS + ("audit",)


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_table(table: str, results_dir: Path, out_dir: Path, profile: str, metric: str, version: str) -> list[Path]:
    records = load_records(results_dir, tables.TABLES[table].experiments)
    data = tables.build_table(table, records, profile, metric, version)
    return [write_text(out_dir / f"{table}.md", tables.render_markdown(data)),
            write_text(out_dir / f"{table}.tex", tables.render_latex(data)),
            write_text(out_dir / f"{table}.csv", tables.render_csv(data))]


def make_figure(figure: str, results_dir: Path, out_dir: Path, profile: str, version: str) -> list[Path]:
    # Imported here so that tables and the audit do not pay for matplotlib.
    from figures import llama_figures, vit_figures

    module = vit_figures if figure in vit_figures.BUILDERS else llama_figures
    return module.render(figure, results_dir, out_dir, profile, version)


def make_audit(out_root: Path) -> list[Path]:
    from figures import audit, audit_report

    report = audit.run_audit()
    return [write_text(out_root / "audit.json", json.dumps(report, indent=1, sort_keys=True) + "\n"),
            write_text(out_root / "audit.md", audit_report.render_markdown(report))]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m figures", description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", default=["all"], metavar="TARGET",
                        help=f"what to build: {', '.join(TARGETS)} or all (default: all)")
    parser.add_argument("--profile", action="append",
                        help=f"result profile (a folder under --results-root) to draw from; repeat for several "
                             f"(default: {' and '.join(PROFILES)})")
    parser.add_argument("--results-root", type=Path, default=RESULTS_ROOT,
                        help="folder holding one subfolder per profile (default: results/)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs", help="output folder (default: outputs/)")
    parser.add_argument("--metric", choices=sorted(METRICS), default="best",
                        help="ViT accuracy shown in tables: the best epoch's test accuracy, which the ViT runner "
                             "marks as the reported metric, or the last epoch's (default: best)")
    args = parser.parse_args(argv)
    unknown = [t for t in args.targets if t != "all" and t not in TARGETS]
    if unknown:
        parser.error(f"unknown target {unknown[0]!r}: choose from {', '.join(TARGETS)} or all")
    for profile in args.profile or []:
        # The standard profiles are drawn even before any result exists; others must exist.
        if profile not in PROFILES and not (args.results_root / profile).is_dir():
            parser.error(f"profile folder {args.results_root / profile} not found: choose {' or '.join(PROFILES)} "
                         "or an existing folder such as smoke")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="figures: %(message)s")
    args = parse_args(argv)
    targets = list(TARGETS) if "all" in args.targets else list(dict.fromkeys(args.targets))
    profiles = args.profile or list(PROFILES)
    version = code_version()

    written: list[Path] = []
    try:
        if "audit" in targets:
            written += make_audit(args.out)
        for profile in profiles:
            results_dir = args.results_root / profile
            out_dir = args.out / profile
            for target in targets:
                if target in TABLE_TARGETS:
                    written += make_table(target, results_dir, out_dir, profile, METRICS[args.metric], version)
                elif target in FIGURE_TARGETS:
                    written += make_figure(target, results_dir, out_dir, profile, version)
    except ValueError as error:
        # Invalid result files or paper data: one line that names the file or value, no traceback.
        log.error("failed: %s", error)
        return 1
    finally:
        for path in written:
            log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
