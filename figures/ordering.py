"""Check the block orderings that the paper claims, on any group of cells.

A cell group is every configuration of one table that shares method, rank and
dataset, e.g. Table 1, LoRA rank 1, CIFAR-100 with targets Q, K, V and O. The
paper's claims are written as pairwise comparisons:

* ``single``   (Tables 1, 2): O >= V, V > Q, V > K
* ``pairs``    (Tables 3, 4, 7): OV >= QV, QV >= QK
* ``o_over_v`` (Tables 5, 8): O >= V

The same checker runs on the paper's numbers (figures.audit) and on our own
reproduced means (figures.tables).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.special import stdtr

# (higher, lower, strict): the claim is mean[higher] > mean[lower], or >= when not strict.
CLAIMS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "single": (("O", "V", False), ("V", "Q", True), ("V", "K", True)),
    "pairs": (("OV", "QV", False), ("QV", "QK", False)),
    "o_over_v": (("O", "V", False),),
}
CLAIM_TEXT = {
    "single": "O >= V > Q, K",
    "pairs": "OV >= QV >= QK",
    "o_over_v": "O >= V",
}
MAX_SEEDS_SEARCHED = 20


@dataclass(frozen=True)
class Measurement:
    """Mean and standard deviation (None when unknown) of one cell, in percent."""

    mean: float
    std: float | None = None


def seeds_for_significance(margin: float, std_a: float, std_b: float, alpha: float = 0.05) -> int | None:
    """Return the fewest seeds per arm for which a one-sided Welch t-test on `margin` reaches `alpha`.

    Assumes both arms have the same number of seeds n and that the reported
    stds are sample stds over those seeds. Returns None when the margin is not
    positive, when both stds are zero, or when more than MAX_SEEDS_SEARCHED seeds would be needed.
    """
    if margin <= 0:
        return None
    variance_a, variance_b = std_a ** 2, std_b ** 2
    if variance_a + variance_b == 0:
        return None
    for n in range(2, MAX_SEEDS_SEARCHED + 1):
        standard_error = math.sqrt((variance_a + variance_b) / n)
        t_value = margin / standard_error
        # Welch-Satterthwaite degrees of freedom with equal n per arm.
        dof = (variance_a + variance_b) ** 2 / ((variance_a ** 2 + variance_b ** 2) / (n - 1))
        # stdtr is Student's t CDF; the one-sided p-value is P(T > t) = CDF(-t). It loads faster than scipy.stats.
        if stdtr(dof, -t_value) < alpha:
            return n
    return None


def compare(higher: str, lower: str, strict: bool, cells: dict[str, Measurement]) -> dict:
    """Evaluate one claimed comparison inside a cell group; missing cells give holds=None."""
    result: dict = {"higher": higher, "lower": lower, "relation": ">" if strict else ">="}
    if higher not in cells or lower not in cells:
        result.update(holds=None, missing=[b for b in (higher, lower) if b not in cells])
        return result

    a, b = cells[higher], cells[lower]
    # Round to the printed precision so that 96.42 - 96.41 is 0.01, not 0.0100000000009.
    margin = round(a.mean - b.mean, 6)
    holds = margin > 0 if strict else margin >= 0
    result.update(higher_mean=a.mean, lower_mean=b.mean, margin=margin, holds=holds)

    if a.std is not None and b.std is not None:
        combined = math.sqrt(a.std ** 2 + b.std ** 2)
        result.update(
            higher_std=a.std, lower_std=b.std,
            combined_std=round(combined, 6),
            # A margin above the std of a difference of two single runs is outside seed noise.
            exceeds_std=margin > combined,
            exceeds_larger_std=margin > max(a.std, b.std),
            seeds_for_p05=seeds_for_significance(margin, a.std, b.std),
        )
    return result


def check_group(claim: str, cells: dict[str, Measurement]) -> dict:
    """Check every comparison of `claim` on one cell group (blocks label -> measurement)."""
    if claim not in CLAIMS:
        raise ValueError(f"unknown claim {claim!r}: expected one of {sorted(CLAIMS)}")
    comparisons = [compare(higher, lower, strict, cells) for higher, lower, strict in CLAIMS[claim]]
    outcomes = [c["holds"] for c in comparisons]
    if False in outcomes:
        holds = False  # one broken comparison breaks the claim, whatever is missing
    elif None in outcomes:
        holds = None
    else:
        holds = True
    return {"claim": CLAIM_TEXT[claim], "comparisons": comparisons, "holds": holds}


def summarize_groups(groups: dict[str, dict]) -> dict:
    """Count groups that hold, fail or cannot be decided, and list the comparisons that break."""
    breaks, within_noise = [], []
    for name, group in groups.items():
        for comparison in group["comparisons"]:
            label = f"{name}: {comparison['higher']} {comparison['relation']} {comparison['lower']}"
            if comparison["holds"] is False:
                entry = {"group": name, "comparison": label, "margin": comparison["margin"]}
                if "combined_std" in comparison:
                    entry["combined_std"] = comparison["combined_std"]
                    entry["within_noise"] = -comparison["margin"] <= comparison["combined_std"]
                breaks.append(entry)
            if comparison["holds"] and comparison.get("exceeds_std") is False:
                within_noise.append({"group": name, "comparison": label, "margin": comparison["margin"],
                                     "combined_std": comparison["combined_std"],
                                     "exceeds_larger_std": comparison["exceeds_larger_std"]})
    verdicts = [g["holds"] for g in groups.values()]
    return {
        "groups_total": len(groups),
        "groups_holding": sum(v is True for v in verdicts),
        "groups_failing": sum(v is False for v in verdicts),
        "groups_undecided": sum(v is None for v in verdicts),
        "breaks": breaks,
        "within_noise": within_noise,
    }
