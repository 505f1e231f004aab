"""Audit of the paper's tables: known verdicts, the ordering checker, and the closed-form counts."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from scipy import stats

from figures import audit, paper
from figures.ordering import Measurement, check_group, seeds_for_significance, summarize_groups


@pytest.fixture(scope="module")
def findings():
    report = audit.run_audit()
    json.dumps(report)  # must be JSON-serialisable for the verification report
    return {item["id"]: item for item in report["findings"]}


def test_findings_are_well_formed(findings):
    for finding_id, item in findings.items():
        assert set(item) == {"id", "claim", "verdict", "evidence"}, finding_id
        assert item["verdict"] in audit.VERDICTS, finding_id
        assert item["claim"], finding_id
    for table in paper.TABLES:
        assert f"{table}.ordering" in findings
        assert f"{table}.margin_vs_std" in findings


def test_table2_break_found(findings):
    item = findings["table2.ordering"]
    assert item["verdict"] == "fails_as_stated"
    assert [b["comparison"] for b in item["evidence"]["breaks"]] == ["lora r4 SVHN: O >= V"]
    assert item["evidence"]["breaks"][0]["margin"] == pytest.approx(90.22 - 96.04)


def test_table1_ordering_holds(findings):
    assert findings["table1.ordering"]["verdict"] == "holds"
    assert findings["table1.ordering"]["evidence"]["groups_total"] == 12


def test_llama_breaks_listed(findings):
    breaks = [b["comparison"] for b in findings["table4.ordering"]["evidence"]["breaks"]]
    assert "lora r1 BoolQ: QV >= QK" in breaks
    assert findings["table3.margin_vs_std"]["verdict"] == "inconclusive"


def test_margins_within_noise_listed(findings):
    noisy = findings["table8.margin_vs_std"]["evidence"]["within_noise"]
    assert "dora r8 Food-101: O >= V" in [n["comparison"] for n in noisy]


def test_params_imply_100_class_head(findings):
    item = findings["table1.params"]
    assert item["verdict"] == "holds_with_correction"
    assert item["evidence"]["head_classes_consistent_with_every_row"] == [100]
    assert findings["table7.params"]["evidence"]["head_classes_consistent_with_every_row"] == [100]


def test_closed_form_params():
    assert audit.vit_params(rank=1, blocks=1, classes=100) == 12 * 1536 + 76_900
    assert audit.vit_params(rank=8, blocks=2, classes=0) == 294_912


def test_epochs_disagree(findings):
    item = findings["setup.epochs"]
    assert item["verdict"] == "fails_as_stated"
    assert len(item["evidence"]["disagreeing_rows"]) == 3


def test_text_claims(findings):
    assert findings["table3.avg_column"]["verdict"] == "holds"
    assert findings["table1.text.rank1_gap"]["verdict"] == "holds"
    assert findings["table5.text.only_exception"]["verdict"] == "holds"
    assert findings["table8.text.dora_food_gain"]["verdict"] == "fails_as_stated"
    assert findings["table4.text.larger_model_gap"]["evidence"]["llama3_gap_larger"][4] is False


def test_audit_follows_paper_data(tmp_path, monkeypatch):
    """Editing the transcription changes the verdict, so the audit reads the data, not constants."""
    shutil.copytree(paper.PAPER_DATA, tmp_path, dirs_exist_ok=True)
    rows = list(csv.DictReader((tmp_path / "table6.csv").open()))
    for row in rows:
        if row["task"] == "vision":
            row["epochs"] = "20"
    with (tmp_path / "table6.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    monkeypatch.setattr(paper, "PAPER_DATA", tmp_path)
    assert audit.epochs_finding()["verdict"] == "holds"


def test_check_group_detects_break():
    cells = {"O": Measurement(80.0, 0.1), "V": Measurement(81.0, 0.1),
             "Q": Measurement(70.0, 0.1), "K": Measurement(70.0, 0.1)}
    group = check_group("single", cells)
    assert group["holds"] is False
    assert [c["holds"] for c in group["comparisons"]] == [False, True, True]
    summary = summarize_groups({"g": group})
    assert summary["breaks"][0]["margin"] == pytest.approx(-1.0)
    assert summary["breaks"][0]["within_noise"] is False


def test_check_group_missing_cell_undecided():
    group = check_group("pairs", {"OV": Measurement(80.0), "QV": Measurement(79.0)})
    assert group["holds"] is None
    assert group["comparisons"][1]["missing"] == ["QK"]


def test_check_group_break_beats_missing():
    group = check_group("pairs", {"OV": Measurement(78.0), "QV": Measurement(79.0)})
    assert group["holds"] is False


def test_strict_comparison_rejects_tie():
    group = check_group("single", {b: Measurement(80.0) for b in "QKVO"})
    assert [c["holds"] for c in group["comparisons"]] == [True, False, False]


def test_seeds_for_significance_matches_welch():
    n = seeds_for_significance(0.2, 0.1, 0.15)
    assert n is not None
    at_n = stats.ttest_ind_from_stats(80.2, 0.1, n, 80.0, 0.15, n, equal_var=False, alternative="greater")
    below = stats.ttest_ind_from_stats(80.2, 0.1, n - 1, 80.0, 0.15, n - 1, equal_var=False,
                                       alternative="greater")
    assert at_n.pvalue < 0.05
    assert n == 2 or below.pvalue >= 0.05
    assert seeds_for_significance(0.0, 0.1, 0.1) is None
    assert seeds_for_significance(0.001, 1.0, 1.0) is None


def test_audit_markdown_lists_every_finding(findings):
    from figures.audit_report import render_markdown

    report = {"code_version": "abc", "source": "test", "findings": list(findings.values()),
              "summary": {verdict: 0 for verdict in audit.VERDICTS}}
    text = render_markdown(report)
    for finding_id in findings:
        assert f"## `{finding_id}`" in text
    assert "- breaks: lora r4 SVHN: O >= V (margin -5.82, noise 0.09, beyond noise)" in text


def test_cli_writes_audit(tmp_path):
    from figures.__main__ import main

    assert main(["audit", "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "audit.json").read_text())
    assert written["schema"] == audit.SCHEMA
    assert (tmp_path / "audit.md").read_text().startswith("# Audit of the paper's tables")
