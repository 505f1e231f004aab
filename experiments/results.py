"""Result files shared by the experiment runners and the figure scripts.

Each finished run is one JSON file named after the hash of its full config, so
a sweep that is killed and restarted skips finished runs and never reads a
half-written file (files are written to a temporary name, fsync'ed, then
renamed, which is atomic on POSIX file systems).

Layout: ``results/<profile>/<experiment>/<config_hash>.json`` where profile is
``cpu_profile`` (small real runs, committed) or ``paper_scale`` (GPU runs).
Every file holds at least::

    {"schema": "blockrank.result/1", "code_version": str, "config_hash": str,
     "config": {...}, "status": "complete", "metrics": {...}, "history": [...]}
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

SCHEMA = "blockrank.result/1"
REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_ROOT = REPO_ROOT / "results"


def config_hash(config: dict[str, Any]) -> str:
    """Return a 16-hex-digit hash of a JSON-serialisable config, independent of key order."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def code_version() -> str:
    """Return the git commit of the working tree (with '+dirty' when it has changes), or 'unknown'."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if status else "")


def result_path(directory: Path, config: dict[str, Any]) -> Path:
    return Path(directory) / f"{config_hash(config)}.json"


def is_complete(directory: Path, config: dict[str, Any]) -> bool:
    """Return True when a complete result for this exact config exists in `directory`."""
    path = result_path(directory, config)
    if not path.exists():
        return False
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return record.get("status") == "complete" and record.get("config_hash") == config_hash(config)


def write_result(directory: Path, config: dict[str, Any], metrics: dict[str, Any],
                 history: list[dict[str, Any]] | None = None, **extra: Any) -> Path:
    """Write one run's result atomically and return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "schema": SCHEMA,
        "code_version": code_version(),
        "config_hash": config_hash(config),
        "config": config,
        "status": "complete",
        "metrics": metrics,
        "history": history or [],
        **extra,
    }
    path = result_path(directory, config)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(record, stream, indent=1, sort_keys=True, allow_nan=False)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def iter_results(directory: Path) -> Iterator[dict[str, Any]]:
    """Yield every complete result under `directory` (recursively), skipping temporary files."""
    for path in sorted(Path(directory).rglob("*.json")):
        if path.name.startswith(".tmp-"):
            continue
        record = json.loads(path.read_text())
        if record.get("schema") == SCHEMA and record.get("status") == "complete":
            yield record
