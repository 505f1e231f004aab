"""Figure scripts render headless and draw what the results contain."""

from __future__ import annotations

import statistics

import matplotlib
import pytest
from PIL import Image

from figures import llama_figures, vit_figures
from figures.plotting import MISSING_TEXT, moving_average, save, stamp_text


def vit_record(blocks, seed, *, experiment="figure3", rank=4, dataset="cifar100", modification="none",
               switch_blocks="", switch_epoch=0, epochs=3):
    history = []
    for epoch in range(epochs + 1):
        norms = {b: {"spectral": [1.0 + layer + (epoch + 0.5 * seed) * (b == blocks) for layer in range(3)],
                     "frobenius": [5.0 + layer for layer in range(3)]} for b in "QKVO"}
        history.append({"epoch": epoch, "train_loss": 2.0 / (epoch + 1) + seed * 0.1,
                        "test_accuracy": 50.0 + 10 * epoch + seed, "norms": norms})
    config = {"experiment": experiment, "backbone": "vit_tiny", "dataset": dataset, "method": "lora",
              "blocks": blocks, "rank": rank, "seed": seed, "epochs": epochs, "modification": modification,
              "switch_blocks": switch_blocks, "switch_epoch": switch_epoch}
    initial = {b: {"spectral": [0.5 + layer for layer in range(3)], "frobenius": [4.0] * 3} for b in "QKVO"}
    return {"config": config, "history": history, "metrics": {}, "initial_norms": initial}


def llama_record(blocks, seed, steps=120, rank=1):
    history = [{"step": 0, "validation_loss": 3.0}]
    for step in range(1, steps + 1):
        entry = {"step": step, "train_loss": 3.0 - step * 0.01 + (step % 2) * 0.2 + seed * 0.05}
        if step % 20 == 0:
            entry["validation_loss"] = 3.0 - step * 0.01
        history.append(entry)
    config = {"experiment": "commonsense_llama2_7b", "model": "llama2-7b", "method": "lora", "blocks": blocks,
              "rank": rank, "seed": seed}
    norms = {"frobenius": {b: [10.0 + i + "QKVO".index(b) for i in range(4)] for b in "QKVO"}}
    return {"config": config, "history": history, "metrics": {}, "pretrained_norms": norms}


def legend_labels(ax):
    legend = ax.get_legend()
    return [text.get_text() for text in legend.get_texts()] if legend else []


def panel_text(ax):
    return " ".join(text.get_text() for text in ax.texts)


def test_headless_backend():
    assert matplotlib.get_backend().lower() == "agg"


def test_moving_average():
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert moving_average([2.0, 4.0], 50) == [2.0, 3.0]
    with pytest.raises(ValueError, match="window 0"):
        moving_average([1.0], 0)


def test_figure3_content():
    records = [vit_record(b, s) for b in "QKVO" for s in (0, 1)]
    records.append(vit_record("O", 0, rank=8))  # another rank: not part of Figure 3
    figure = vit_figures.build_figure3(records)
    (loss, accuracy, norms), = [figure.axes[i:i + 3] for i in range(0, len(figure.axes), 3)]
    assert len(figure.axes) == 3
    assert len(loss.get_lines()) == 4
    assert legend_labels(loss) == ["Q (n=2)", "K (n=2)", "V (n=2)", "O (n=2)"]
    assert loss.get_xlabel() == "epoch"
    assert accuracy.get_ylabel() == "test accuracy (%), CIFAR-100"
    o_line = accuracy.get_lines()[3]
    assert list(o_line.get_ydata()) == [statistics.fmean([50.0 + 10 * e, 51.0 + 10 * e]) for e in range(4)]
    assert norms.get_ylabel() == "spectral norm"
    assert len(norms.get_lines()) == 8  # before and after tuning, per block
    after_o = [line for line in norms.get_lines() if line.get_label() == "O after tuning O"][0]
    assert list(after_o.get_ydata()) == [4.25, 5.25, 6.25]  # mean over seeds 0 and 1
    assert loss.get_title() == ""  # all four blocks present
    before_o = [line for line in norms.get_lines() if line.get_label() == "O before"][0]
    assert list(before_o.get_ydata()) == [0.5, 1.5, 2.5]


def test_figure3_norms_from_history_without_initial():
    records = [vit_record("V", 0)]
    del records[0]["initial_norms"]
    norms = vit_figures.build_figure3(records).axes[2]
    before_v = [line for line in norms.get_lines() if line.get_label() == "V before"][0]
    assert list(before_v.get_ydata()) == [1.0, 2.0, 3.0]  # first history entry (epoch 0)


def test_figure3_falls_back_to_table1():
    records = [vit_record(b, 0, experiment="table1") for b in "VO"]
    figure = vit_figures.build_figure3(records)
    assert legend_labels(figure.axes[0]) == ["V (n=1)", "O (n=1)"]
    assert figure.axes[0].get_title() == "missing: Q, K"


def test_figure3_without_results_marks_missing():
    figure = vit_figures.build_figure3([])
    assert all(len(ax.get_lines()) == 0 for ax in figure.axes)
    assert all(MISSING_TEXT in panel_text(ax) for ax in figure.axes)


def test_figure1_panels():
    records = [vit_record("O", 0, experiment="figure1", modification="large_o", rank=1),
               vit_record("V", 0, experiment="figure1", modification="large_o", rank=1),
               vit_record("V", 0, experiment="figure1", rank=1),
               vit_record("V", 0, experiment="figure1", rank=1, switch_blocks="O", switch_epoch=2)]
    figure = vit_figures.build_figure1(records)
    axes = figure.axes
    assert len(axes) == 6  # two rows (loss, accuracy) by three panels
    assert legend_labels(axes[0]) == ["V (n=1)", "O (n=1)"]
    assert MISSING_TEXT in panel_text(axes[1])  # no Large V runs
    assert legend_labels(axes[2]) == ["V (n=1)", "V→O at epoch 2 (n=1)"]
    switch_marks = [line for line in axes[2].get_lines() if list(line.get_xdata()) == [2, 2]]
    assert len(switch_marks) == 1
    assert axes[3].get_ylabel() == "test accuracy (%)"


def test_llama_figure_smoothing_and_norms():
    records = [llama_record(b, s) for b in ("V", "QV", "VO") for s in (0, 1)]
    records.append(llama_record("VO", 0, rank=2))  # Figure 5's rank
    figure = llama_figures.build_figure(records, llama_figures.LLAMA_FIGURES["figure2"])
    train, validation, norms = figure.axes
    assert legend_labels(train) == ["V (n=2)", "QV (n=2)", "OV (n=2)"]
    assert train.get_ylabel() == "training loss (MA 50)"
    raw = [statistics.fmean([3.0 - s * 0.01 + (s % 2) * 0.2, 3.0 - s * 0.01 + (s % 2) * 0.2 + 0.05])
           for s in range(1, 121)]
    assert list(train.get_lines()[2].get_ydata()) == pytest.approx(moving_average(raw, 50))
    assert len(validation.get_lines()) == 3
    assert list(validation.get_lines()[0].get_xdata()) == [0, 20, 40, 60, 80, 100, 120]
    assert [line.get_label() for line in norms.get_lines()] == ["Q", "K", "V", "O"]
    assert list(norms.get_lines()[3].get_ydata()) == [13.0, 14.0, 15.0, 16.0]


def test_llama_figure_separates_variants():
    records = [llama_record("QV", 0), llama_record("QV", 1)]
    records[1]["config"]["loss_mode"] = "whole"
    figure = llama_figures.build_figure(records, llama_figures.LLAMA_FIGURES["figure6"])
    labels = legend_labels(figure.axes[0])
    assert labels == ["QV [loss_mode=None] (n=1)", "QV [loss_mode=whole] (n=1)"]


def test_llama_figure_names_missing_block_sets():
    records = [llama_record("QV", 0)]
    figure = llama_figures.build_figure(records, llama_figures.LLAMA_FIGURES["figure6"])
    train = figure.axes[0]
    assert len(train.get_lines()) == 1
    assert "missing: V, OV" in [t.get_text() for t in [train.title]]


def test_save_stamps_png_and_pdf(tmp_path):
    figure = llama_figures.build_figure([], llama_figures.LLAMA_FIGURES["figure4"])
    stamp = stamp_text("abc", "cpu_profile", 0)
    png, pdf = save(figure, tmp_path / "figure4", stamp)
    assert Image.open(png).info["Description"] == stamp
    assert pdf.read_bytes().startswith(b"%PDF")
    assert f"/Subject ({stamp})".encode() in pdf.read_bytes()
    assert stamp in [text.get_text() for text in figure.texts]
