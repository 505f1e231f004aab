"""Render the audit of the paper's tables (figures.audit.run_audit) as Markdown."""

from __future__ import annotations

import json

VERDICT_TEXT = {
    "holds": "holds",
    "fails_as_stated": "fails as stated",
    "holds_with_correction": "holds with correction",
    "inconclusive": "inconclusive",
}
# Evidence keys worth a line of their own in the Markdown; the JSON keeps all of it.
HEADLINE_KEYS = ("breaks", "average_column_holds", "within_noise", "mismatches", "correction", "disagreeing_rows", "failures",
                 "exceptions_in_table", "cells_where_o_is_not_highest", "note", "reason",
                 "head_classes_consistent_with_every_row", "o_minus_v_by_rank", "ov_minus_o_by_rank",
                 "ov_minus_qv_avg", "dora_food101_o_minus_v", "o_minus_worst_of_q_k_rank4")
MAX_LISTED = 12


def describe(value) -> str:
    if isinstance(value, list):
        if not value:
            return "none"
        shown = [describe(item) for item in value[:MAX_LISTED]]
        more = f" … and {len(value) - MAX_LISTED} more" if len(value) > MAX_LISTED else ""
        return "; ".join(shown) + more
    if isinstance(value, dict):
        if "comparison" in value:
            text = f"{value['comparison']} (margin {value['margin']:+.2f}"
            if "combined_std" in value:
                text += f", noise {value['combined_std']:.2f}"
            if "within_noise" in value:
                text += ", within noise" if value["within_noise"] else ", beyond noise"
            return text + ")"
        return json.dumps(value, sort_keys=True)
    return str(value)


def render_markdown(audit: dict) -> str:
    summary = ", ".join(f"{count} {VERDICT_TEXT[v]}" for v, count in audit["summary"].items())
    lines = ["# Audit of the paper's tables", "",
             f"Code version `{audit['code_version']}` · source: {audit['source']}.", "",
             f"{len(audit['findings'])} findings: {summary}. The full evidence (every cell group and "
             "comparison) is in `audit.json`.", "",
             "| id | verdict | claim |", "|---|---|---|"]
    for item in audit["findings"]:
        lines.append(f"| `{item['id']}` | {VERDICT_TEXT[item['verdict']]} | {item['claim']} |")
    lines.append("")
    for item in audit["findings"]:
        lines += [f"## `{item['id']}`: {VERDICT_TEXT[item['verdict']]}", "", item["claim"], ""]
        evidence = item["evidence"]
        for key in HEADLINE_KEYS:
            if key in evidence and evidence[key] not in (None, [], {}):
                lines.append(f"- {key.replace('_', ' ')}: {describe(evidence[key])}")
        if "groups_total" in evidence:
            lines.append(f"- groups: {evidence['groups_holding']} of {evidence['groups_total']} hold, "
                         f"{evidence['groups_failing']} fail")
        lines.append("")
    return "\n".join(lines)
