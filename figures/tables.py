"""Paper tables 1, 2, 3, 4, 5, 7 and 8: reported numbers next to reproduced ones.

Each configuration gets a row with the paper's reported value and a row with
ours (mean ± sample std over seeds, with the difference to the paper in
parentheses), or one row per variant when results differ in other settings.
Cells without results read "missing"; cells the paper does not report read
"–". Below the table, the paper's claimed ordering is checked on our means.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from figures.collect import CellKey, CellStats, aggregate_cells
from figures.ordering import Measurement, check_group
from figures.paper import (TABLES, PaperCell, TableSpec, block_sort_key, dataset_label, load_table,
                           paper_configs)

METHOD_NAMES = {"lora": "LoRA", "dora": "DoRA", "adalora": "AdaLoRA"}
MISSING = "missing"
NOT_REPORTED = "–"


@dataclass
class TableData:
    """Everything one rendered table shows, independent of the output format."""

    spec: TableSpec
    profile: str
    metric: str
    code_version: str
    configs: list[tuple[str, int, str]]
    datasets: list[str]
    paper: dict[CellKey, PaperCell]
    ours: dict[CellKey, CellStats]
    backbones: list[str]
    result_count: int
    ordering: dict[str, dict]


def build_table(table: str, records: list[dict], profile: str, metric: str, code_version: str) -> TableData:
    """Match result records to the paper's cells of `table` and check the ordering on our means."""
    spec = TABLES[table]
    paper_cells = load_table(table)
    paper = {(c.method, c.rank, c.blocks, c.dataset): c for c in paper_cells}
    ours = aggregate_cells(records, metric)

    configs = paper_configs(paper_cells)
    configs += sorted({key[:3] for key in ours} - set(configs), key=lambda c: (c[0], c[1], block_sort_key(c[2])))
    datasets = list(spec.datasets)
    datasets += sorted({key[3] for key in ours} - set(datasets))

    groups: dict[str, dict[str, Measurement]] = {}
    for (method, rank, blocks, dataset, variant), stats in sorted(ours.items(), key=lambda item: (
            item[0][0], item[0][1], item[0][4], datasets.index(item[0][3]))):
        name = f"{method} r{rank} {dataset_label(dataset)}" + (f" [{variant}]" if variant else "")
        groups.setdefault(name, {})[blocks] = Measurement(stats.mean, stats.std)
    ordering = {name: check_group(spec.claim, cells) for name, cells in groups.items()}

    backbones = sorted({str(r["config"].get("backbone", r["config"].get("model", "?"))) for r in records})
    return TableData(spec, profile, metric, code_version, configs, datasets, paper, ours,
                     backbones, len(records), ordering)


def format_params(values: list[int]) -> str:
    if not values:
        return NOT_REPORTED

    def one(count: int) -> str:
        return f"{count / 1e6:.2f} M" if count >= 10_000 else f"{count:,}"

    low, high = min(values), max(values)
    return one(low) if low == high else f"{one(low)}–{one(high)}"


def seeds_text(counts: list[int]) -> str:
    if not counts:
        return "0"
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}–{high}"


def paper_cell_text(cell: PaperCell | None) -> str:
    if cell is None:
        return NOT_REPORTED
    return cell.mean_text if cell.std is None else f"{cell.mean_text} ± {cell.std:.2f}"


def our_cell_text(stats: CellStats | None, reported: PaperCell | None) -> str:
    if stats is None or stats.n == 0:
        return MISSING
    text = f"{stats.mean:.2f}" if stats.std is None else f"{stats.mean:.2f} ± {stats.std:.2f}"
    if reported is not None:
        text += f" ({stats.mean - reported.mean:+.2f})"
    return text


def table_rows(data: TableData) -> list[list[str]]:
    """Return the body as rows of plain-text cells: a paper row, then one ours row per variant.

    Results whose configs differ in fields other than the cell's (see figures.collect.variant_labels)
    get one ours row each, labelled with the differing fields.
    """
    rows = []
    for method, rank, blocks in data.configs:
        paper_cells = [data.paper.get((method, rank, blocks, dataset)) for dataset in data.datasets]
        printed = next((c.params_m for c in paper_cells if c is not None and c.params_m), None)
        label = f"{METHOD_NAMES.get(method, method)} (rank {rank})"
        rows.append([label, blocks, "paper", f"{printed} M" if printed else NOT_REPORTED]
                    + [paper_cell_text(cell) for cell in paper_cells] + [NOT_REPORTED])

        variants = sorted({key[4] for key in data.ours if key[:3] == (method, rank, blocks)}) or [""]
        for variant in variants:
            our_cells = [data.ours.get((method, rank, blocks, dataset, variant)) for dataset in data.datasets]
            seeds = sorted({stats.n for stats in our_cells if stats is not None})
            params = [p for stats in our_cells if stats is not None for p in stats.params]
            rows.append(["", "", f"ours ({variant})" if variant else "ours", format_params(params)]
                        + [our_cell_text(stats, cell) for stats, cell in zip(our_cells, paper_cells)]
                        + [seeds_text(seeds)])
    return rows


def header(data: TableData) -> list[str]:
    return ["Configuration", "Target", "Source", "# Params"] + [dataset_label(d) for d in data.datasets] + ["Seeds"]


def ordering_lines(data: TableData) -> list[str]:
    """Describe, per cell group of our results, whether the paper's claimed ordering holds."""
    lines = []
    for name, group in data.ordering.items():
        parts = []
        for c in group["comparisons"]:
            relation = f"{c['higher']} {c['relation']} {c['lower']}"
            if c["holds"] is None:
                parts.append(f"{relation}: missing {', '.join(c['missing'])}")
            else:
                noise = f", noise {c['combined_std']:.2f}" if "combined_std" in c else ""
                parts.append(f"{relation}: {'holds' if c['holds'] else 'breaks'} (margin {c['margin']:+.2f}{noise})")
        verdict = {True: "holds", False: "breaks", None: "undecided"}[group["holds"]]
        lines.append(f"{name}: {verdict}; " + "; ".join(parts))
    return lines


def caption(data: TableData) -> str:
    return (f"Table {data.spec.number} of the paper: {data.spec.title}. Profile {data.profile}, "
            f"metric {data.metric}, {data.result_count} result files, code version {data.code_version}.")


def render_markdown(data: TableData) -> str:
    lines = [f"# Table {data.spec.number}: {data.spec.title}", "",
             f"Profile `{data.profile}` · metric `{data.metric}` · {data.result_count} result files · "
             f"code version `{data.code_version}`.", "",
             "Each configuration has a `paper` row (reported) and an `ours` row: mean ± sample std over "
             "seeds, with ours minus paper in parentheses. `missing` marks runs not yet in the results; "
             "`–` marks values the paper does not report.", ""]
    if data.backbones:
        lines += [f"Backbones in these results: {', '.join(f'`{b}`' for b in data.backbones)} "
                  f"(the paper's column is `{data.spec.model}`).", ""]
    columns = header(data)
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in table_rows(data):
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"## Claimed ordering on our results ({next(iter(data.ordering.values()))['claim']})"
              if data.ordering else "## Claimed ordering on our results", ""]
    lines += [f"- {line}" for line in ordering_lines(data)] or ["- no results yet"]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("table", "profile", "metric", "method", "rank", "blocks", "dataset", "variant", "paper_mean",
               "paper_std", "ours_mean", "ours_std", "ours_n", "difference", "seeds")


def render_csv(data: TableData) -> str:
    """Render one line per (configuration, dataset, variant): paper and ours side by side, for analysis.

    Empty fields are absent values (no run, no reported std); they are never written as 0.
    """
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for method, rank, blocks in data.configs:
        variants = sorted({key[4] for key in data.ours if key[:3] == (method, rank, blocks)}) or [""]
        for variant in variants:
            for dataset in data.datasets:
                reported = data.paper.get((method, rank, blocks, dataset))
                stats = data.ours.get((method, rank, blocks, dataset, variant))
                if reported is None and stats is None:
                    continue
                ours_mean = stats.mean if stats else None
                writer.writerow([
                    f"table{data.spec.number}", data.profile, data.metric, method, rank, blocks, dataset, variant,
                    reported.mean_text if reported else "", reported.std if reported and reported.std is not None else "",
                    f"{ours_mean:.4f}" if stats else "", f"{stats.std:.4f}" if stats and stats.std is not None else "",
                    stats.n if stats else 0,
                    f"{ours_mean - reported.mean:.4f}" if stats and reported else "",
                    " ".join(sorted(str(seed) for seed in stats.seeds)) if stats else "",
                ])
    return stream.getvalue()


def latex_escape(text: str) -> str:
    replacements = {"±": r"$\pm$", "–": "--", "%": r"\%", "_": r"\_", "&": r"\&", "#": r"\#", "$": r"\$",
                    "{": r"\{", "}": r"\}", "^": r"\^{}", "~": r"\~{}", "\\": r"\textbackslash{}"}
    if text == MISSING:
        return r"\textit{missing}"
    return "".join(replacements.get(ch, ch) for ch in text)


def render_latex(data: TableData) -> str:
    """Render a booktabs table; needs \\usepackage{booktabs} in the document."""
    columns = header(data)
    spec = "llll" + "c" * len(data.datasets) + "r"
    lines = [f"% {caption(data)}", r"\begin{table}[t]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(caption(data))}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in columns) + r" \\", r"\midrule"]
    rows = table_rows(data)
    for index, row in enumerate(rows):
        if index and row[2] == "paper":
            lines.append(r"\addlinespace")
        lines.append(" & ".join(latex_escape(cell) for cell in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\label{{tab:blockrank-table{data.spec.number}-{data.profile}}}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"
