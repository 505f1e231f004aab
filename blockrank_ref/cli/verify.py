"""`blockrank verify`: run the theory suite and write reports/verification.{md,json}."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from blockrank_ref.cli import UsageError

PROFILES = ("ci", "default", "thorough")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check every claim of section 3 and appendices A-C and write the verification report",
        description="Run the property-based theory suite (theory_tests/) and write a verdict per claim "
                    "to reports/verification.md and reports/verification.json. A claim that fails as "
                    "stated is a result; the exit status is non-zero only when a test errs.",
    )
    parser.add_argument("--profile", default="default", choices=PROFILES,
                        help="Hypothesis profile: ci (derandomised), default, thorough (10x examples)")
    parser.add_argument("--output", type=Path, default=Path("reports"),
                        help="folder for verification.md and verification.json (default: reports)")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the summary")
    parser.set_defaults(run=run)


def _suite_folder() -> Path:
    import theory_tests

    return Path(theory_tests.__file__).resolve().parent


def _paper_table_audit() -> dict | None:
    """Return the audit of the paper's reported tables, or None when the figures package lacks it."""
    try:
        from figures.audit import run_audit
    except ImportError:
        return None
    return run_audit()


def run(args: argparse.Namespace) -> int:
    from theory_tests.report import audit_summary_line, build_report, summary_lines, write_reports

    if args.output.exists() and not args.output.is_dir():
        raise UsageError(f"--output must be a folder; {args.output} is a file")
    with tempfile.TemporaryDirectory() as scratch:
        evidence_path = Path(scratch) / "evidence.json"
        env = dict(os.environ, HYPOTHESIS_PROFILE=args.profile, BLOCKRANK_EVIDENCE_JSON=str(evidence_path),
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        command = [sys.executable, "-m", "pytest", str(_suite_folder()), "-q", "-p", "no:cacheprovider",
                   "--no-header", "-rfE", f"--rootdir={_suite_folder().parent}"]
        completed = subprocess.run(command, env=env, capture_output=True, text=True)
        if not evidence_path.exists():
            sys.stderr.write(completed.stdout[-4000:] + completed.stderr[-4000:])
            print("blockrank verify: error: the theory suite did not run (see pytest's output above)",
                  file=sys.stderr)
            return 1
        run_record = json.loads(evidence_path.read_text())

    report = build_report(run_record)
    audit = _paper_table_audit()
    paths = write_reports(report, args.output, audit)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        print("\n".join(summary_lines(report)))
        if audit_summary_line(audit):
            print(audit_summary_line(audit))
        print("report: " + ", ".join(str(p.resolve()) for p in paths))
    if report["failed_tests"]:
        print("blockrank verify: error: these tests failed, so some verdicts are inconclusive:", file=sys.stderr)
        for nodeid in report["failed_tests"]:
            print(f"  {nodeid}", file=sys.stderr)
        sys.stderr.write(completed.stdout[-6000:])
        return 1
    return 0
