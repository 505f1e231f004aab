"""Table generation on partial results: paper next to ours, missing runs, LaTeX, and the CLI."""

from __future__ import annotations

import csv
import io
import json
import statistics

import pytest

from experiments.results import SCHEMA, write_result
from figures import tables
from figures.__main__ import main
from figures.collect import aggregate_cells, load_records

VIT_ACCURACY = {("O", 0): 84.0, ("O", 1): 85.0, ("V", 0): 86.0, ("V", 1): 86.5, ("Q", 0): 70.0}


def write_vit_results(root):
    """Table 1, rank 1, CIFAR-100: O and V with two seeds, Q with one, K missing; V beats O."""
    for (blocks, seed), accuracy in VIT_ACCURACY.items():
        config = {"experiment": "table1", "backbone": "vit_tiny", "dataset": "CIFAR-100", "method": "lora",
                  "blocks": blocks, "rank": 1, "seed": seed, "epochs": 2}
        metrics = {"test_accuracy_last": accuracy, "test_accuracy_best": accuracy + 1.0,
                   "trainable_params": 95_332}
        write_result(root / "cpu_profile" / "table1", config, metrics, [])


def markdown_rows(text):
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ")]


@pytest.fixture()
def table1(tmp_path):
    write_vit_results(tmp_path)
    records = load_records(tmp_path / "cpu_profile", ["table1"])
    return tables.build_table("table1", records, "cpu_profile", "test_accuracy_last", "abc123")


def test_partial_table_shows_missing(table1):
    rows = markdown_rows(tables.render_markdown(table1))
    header, body = rows[0], rows[1:]
    assert header[:4] == ["Configuration", "Target", "Source", "# Params"]
    assert len(body) == 2 * 16  # 16 configurations of Table 1, a paper row and an ours row each
    k_ours = body[3]  # rank 1: Q paper, Q ours, K paper, K ours
    assert k_ours[2] == "ours"
    assert k_ours[4:7] == ["missing", "missing", "missing"]
    assert "0.00" not in " ".join(k_ours)
    assert k_ours[-1] == "0"


def test_ours_cell_mean_std_difference(table1):
    rows = markdown_rows(tables.render_markdown(table1))
    o_paper, o_ours = rows[1 + 6], rows[1 + 7]
    assert o_paper[1] == "O"
    assert o_paper[4] == "83.54 ± 0.17"
    mean, std = statistics.fmean([84.0, 85.0]), statistics.stdev([84.0, 85.0])
    assert o_ours[4] == f"{mean:.2f} ± {std:.2f} ({mean - 83.54:+.2f})"
    assert o_ours[3] == "0.10 M"
    assert o_ours[-1] == "2"
    q_ours = rows[1 + 1]
    assert q_ours[4] == f"70.00 ({70.0 - 80.31:+.2f})"  # one seed: no std


def test_ordering_on_our_results(table1):
    group = table1.ordering["lora r1 CIFAR-100"]
    assert group["holds"] is False  # V beats O in these results, although K is missing
    assert group["comparisons"][0]["holds"] is False
    assert group["comparisons"][2]["holds"] is None
    text = tables.render_markdown(table1)
    noise = (statistics.stdev([84.0, 85.0]) ** 2 + statistics.stdev([86.0, 86.5]) ** 2) ** 0.5
    assert f"O >= V: breaks (margin -1.75, noise {noise:.2f})" in text
    assert "V > K: missing K" in text


def test_latex_booktabs(table1):
    latex = tables.render_latex(table1)
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{llllcccr}"):
        assert command in latex
    assert r"83.54 $\pm$ 0.17" in latex
    assert r"\textit{missing}" in latex
    assert "abc123" in latex


def test_csv_side_by_side(table1):
    lines = list(csv.DictReader(io.StringIO(tables.render_csv(table1))))
    o_cifar = [row for row in lines if (row["blocks"], row["rank"], row["dataset"]) == ("O", "1", "cifar100")]
    assert len(o_cifar) == 1
    assert o_cifar[0]["paper_mean"] == "83.54"
    assert float(o_cifar[0]["ours_mean"]) == pytest.approx(84.5)
    assert float(o_cifar[0]["difference"]) == pytest.approx(84.5 - 83.54)
    assert o_cifar[0]["seeds"] == "0 1"
    k_svhn = [row for row in lines if (row["blocks"], row["rank"], row["dataset"]) == ("K", "1", "svhn")][0]
    assert k_svhn["ours_mean"] == ""  # missing, not zero
    assert k_svhn["ours_n"] == "0"
    assert len(lines) == 48  # every paper cell once, no extra datasets


def test_latex_escapes_special_characters():
    assert tables.latex_escape("method_kwargs={'a': 1} & 50%") == r"method\_kwargs=\{'a': 1\} \& 50\%"
    assert tables.latex_escape("1.00 ± 0.10 (1–2)") == r"1.00 $\pm$ 0.10 (1--2)"
    assert tables.latex_escape(r"a\b") == r"a\textbackslash{}b"


def test_llama_metrics_mapped(tmp_path):
    names = {"boolq": 60.0, "piqa": 70.0, "social_i_qa": 50.0, "hellaswag": 40.0, "winogrande": 55.0,
             "ARC-Easy": 65.0, "ARC-Challenge": 45.0, "openbookqa": 52.0}
    config = {"experiment": "commonsense_llama2_7b", "model": "llama2-7b", "method": "lora", "blocks": "VO",
              "rank": 1, "seed": 42}
    metrics = {"accuracy": names, "average_accuracy": 55.0, "examples": {name: 3 for name in names},
               "unparsable": {name: 1 for name in names}}
    write_result(tmp_path / "commonsense_llama2_7b", config, metrics, [])
    flat_config = dict(config, seed=43)
    write_result(tmp_path / "commonsense_llama2_7b", flat_config, names, [])
    records = load_records(tmp_path, tables.TABLES["table3"].experiments)
    cells = aggregate_cells(records, "test_accuracy_last")
    assert cells[("lora", 1, "OV", "arce", "")].values == [65.0, 65.0]
    assert cells[("lora", 1, "OV", "siqa", "")].values == [50.0, 50.0]
    # The stored average wins; a flat record without one gets the mean of its eight test sets.
    assert sorted(cells[("lora", 1, "OV", "avg", "")].values) == pytest.approx(
        sorted([55.0, statistics.fmean(names.values())]))
    assert len(cells) == 9


def test_invalid_accuracy_rejected(tmp_path):
    folder = tmp_path / "table1"
    folder.mkdir()
    record = {"schema": SCHEMA, "status": "complete", "config_hash": "x", "history": [],
              "config": {"experiment": "table1", "dataset": "svhn", "method": "lora", "blocks": "O", "rank": 1,
                         "seed": 0},
              "metrics": {"test_accuracy_last": 150.0}}
    (folder / "x.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="invalid accuracy 150.0"):
        aggregate_cells(load_records(tmp_path, ["table1"]), "test_accuracy_last")


def test_variants_get_own_rows(tmp_path):
    write_vit_results(tmp_path)
    config = {"experiment": "table1", "backbone": "vit_tiny", "dataset": "CIFAR-100", "method": "lora",
              "blocks": "O", "rank": 1, "seed": 0, "epochs": 5}
    write_result(tmp_path / "cpu_profile" / "table1", config, {"test_accuracy_last": 90.0})
    records = load_records(tmp_path / "cpu_profile", ["table1"])
    data = tables.build_table("table1", records, "cpu_profile", "test_accuracy_last", "abc123")
    rows = markdown_rows(tables.render_markdown(data))[1:]
    sources = [row[2] for row in rows[:10]]
    assert sources == ["paper", "ours", "paper", "ours", "paper", "ours", "paper", "ours (epochs=2)",
                       "ours (epochs=5)", "paper"]
    assert rows[8][4] == f"90.00 ({90.0 - 83.54:+.2f})"
    assert rows[7][4].startswith("84.50 ± 0.71")
    assert "lora r1 CIFAR-100 [epochs=5]" in data.ordering


def test_row_dependent_settings_no_variant(tmp_path):
    """An alpha that follows the rank differs between rows, never within one: no variant rows."""
    for rank in (1, 2):
        config = {"experiment": "table1", "backbone": "vit_tiny", "dataset": "svhn", "method": "lora",
                  "blocks": "O", "rank": rank, "seed": 0, "alpha": 2 * rank}
        write_result(tmp_path / "table1", config, {"test_accuracy_best": 90.0})
    cells = aggregate_cells(load_records(tmp_path, ["table1"]), "test_accuracy_best")
    assert sorted(cells) == [("lora", 1, "O", "svhn", ""), ("lora", 2, "O", "svhn", "")]


def test_cli_writes_tables(tmp_path):
    write_vit_results(tmp_path / "results")
    status = main(["table1", "--profile", "cpu_profile", "--results-root", str(tmp_path / "results"),
                   "--out", str(tmp_path / "out"), "--metric", "last"])
    assert status == 0
    markdown = (tmp_path / "out" / "cpu_profile" / "table1.md").read_text()
    assert "metric `test_accuracy_last`" in markdown
    assert f"{statistics.fmean([84.0, 85.0]):.2f} ±" in markdown
    assert (tmp_path / "out" / "cpu_profile" / "table1.tex").exists()


def test_cli_reports_invalid_result(tmp_path, caplog):
    folder = tmp_path / "results" / "cpu_profile" / "table1"
    write_vit_results(tmp_path / "results")
    record = json.loads(next(folder.glob("*.json")).read_text())
    record["metrics"]["test_accuracy_best"] = -3.0
    (folder / "broken.json").write_text(json.dumps(record))
    status = main(["table1", "--profile", "cpu_profile", "--results-root", str(tmp_path / "results"),
                   "--out", str(tmp_path / "out")])
    assert status == 1
    assert "invalid accuracy -3.0" in caplog.text


def test_cli_other_profile_folder(tmp_path, capsys):
    write_vit_results(tmp_path / "results")
    (tmp_path / "results" / "cpu_profile").rename(tmp_path / "results" / "smoke")
    status = main(["table1", "--profile", "smoke", "--results-root", str(tmp_path / "results"),
                   "--out", str(tmp_path / "out")])
    assert status == 0
    assert "Profile `smoke`" in (tmp_path / "out" / "smoke" / "table1.md").read_text()
    with pytest.raises(SystemExit):
        main(["table1", "--profile", "nowhere", "--results-root", str(tmp_path / "results")])
    assert "profile folder" in capsys.readouterr().err


def test_cli_rejects_unknown_target(capsys):
    with pytest.raises(SystemExit) as error:
        main(["table6"])
    assert error.value.code == 2
    assert "unknown target 'table6'" in capsys.readouterr().err
