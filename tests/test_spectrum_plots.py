"""Spectrum plots readable without the paper, and where the spectrum files went (in the log)."""

import logging

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from fuxictr_ext.spectrum.callbacks import SpectrumLog
from fuxictr_ext.spectrum.plot import plot_epochs, plot_histograms, plot_runs


def records(run: str, epochs, metric: str = "IA", split: str = "valid", shift: float = 0.0):
    """Three stages per epoch; the mean grows with the stage (and ``shift``), std 0.1."""
    return [{"run": run, "split": split, "epoch": epoch, "stage": stage, "stage_index": index, "metric": metric,
             "stack_batch": False, "mean": 1.0 + index + shift, "std": 0.1, "n_samples": 8, "n_nonfinite": 0,
             "values": [1.0 + index + shift] * 8}
            for epoch in epochs for index, stage in enumerate(("embedding", "block_0", "block_1"))]


def test_overlay_title_names_metric_split_and_the_epoch_last_resolves_to(tmp_path):
    fig = plot_runs([("a", records("a", [1, 2, 3])), ("b", records("b", [1, 2, 3], shift=1.0))],
                    "IA", str(tmp_path / "ia.png"))
    title = fig.axes[0].get_title()
    assert title == "information abundance (IA) by stage - valid split, epoch 3"
    assert "last" not in title and (tmp_path / "ia.png").stat().st_size > 0
    fig = plot_runs([("a", records("a", [1, "end"], metric="erank"))], "erank", str(tmp_path / "er.png"))
    assert fig.axes[0].get_title() == "effective rank (erank) by stage - valid split, train end (best checkpoint)"


def test_runs_drawn_at_different_epochs_say_so_in_the_legend(tmp_path):
    fig = plot_runs([("a", records("a", [1, 2])), ("b", records("b", [1, 2, 3, 4]))], "IA", str(tmp_path / "x.png"),
                    split="valid")
    assert fig.axes[0].get_title() == "information abundance (IA) by stage"
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["a (valid, epoch 2)", "b (valid, epoch 4)"]


def test_coinciding_lines_stay_distinguishable_and_carry_the_spread(tmp_path):
    same = records("same", [3])
    fig = plot_runs([("a", same), ("b", same), ("c", same)], "IA", str(tmp_path / "same.png"))
    ax = fig.axes[0]
    lines = [container.lines[0] for container in ax.containers]           # one errorbar container per run
    assert len(lines) == 3
    xs = [tuple(line.get_xdata()) for line in lines]
    assert len(set(xs)) == 3                                              # offset sideways
    assert all(abs(a - b) <= 0.15 + 1e-9 for x in xs for a, b in zip(x, range(3)))
    assert len({(line.get_marker(), line.get_linestyle(), line.get_color()) for line in lines}) == 3
    assert len({line.get_marker() for line in lines}) == 3
    caps = [container.lines[2][0].get_segments() for container in ax.containers]
    assert all(np.isclose(seg[1][1] - seg[0][1], 0.2) for segs in caps for seg in segs)   # mean +- std


def test_per_epoch_plot_and_histograms_name_the_metric_and_the_epochs(tmp_path):
    fig = plot_epochs(records("run", [1, 2, "end"]) + records("run", [1, 2, "end"], metric="stable_rank"),
                      str(tmp_path / "epochs.png"), title="DNN_demo")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["DNN_demo: information abundance (IA) by stage", "DNN_demo: stable rank (stable_rank) by stage"]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["valid epoch 1", "valid epoch 2", "valid train end (best checkpoint)"]
    fig = plot_histograms([("a", records("a", [1, 2]))], "IA", ["block_0"], str(tmp_path / "h.png"))
    assert fig._suptitle.get_text() == "per-sample information abundance (IA) - valid split, epoch 2"


def test_the_log_says_where_the_spectrum_files_are(tmp_path, caplog):
    log = SpectrumLog(str(tmp_path), "DNN_demo", plot=True)
    with caplog.at_level(logging.INFO):
        log.add(records("DNN_demo", [1]))
    message = caplog.text
    for suffix in (".csv", ".json", ".png"):
        path = tmp_path / f"DNN_demo.spectrum{suffix}"
        assert path.is_file() and str(path) in message
