"""Example counts scaled by the active Hypothesis profile (see conftest.py)."""

from __future__ import annotations

import os

PROFILE_SCALE = {"ci": 0.5, "default": 1.0, "thorough": 10.0}


def examples(k: int) -> int:
    """Return k examples scaled by the profile named in HYPOTHESIS_PROFILE (at least 5)."""
    scale = PROFILE_SCALE.get(os.environ.get("HYPOTHESIS_PROFILE", "default"), 1.0)
    return max(5, int(round(k * scale)))
