"""repr_sim.plots: a figure for every kind of result file, what it shows, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from _result_fixtures import copy_reference, needs_reference, similarity_file, write_csv

from repr_sim import analysis as A
from repr_sim import plots as P
from repr_sim.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@needs_reference
def test_every_published_file_gets_a_figure(tmp_path):
    for path in copy_reference(tmp_path / "in"):
        result = A.read_result(path)
        fig = P.plot_result(result)
        out = P.save_figure(fig, tmp_path / "out" / f"{path.stem}.png", dpi=60)
        P.close(fig)
        data = out.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, path.name
    assert not [p for p in (tmp_path / "out").iterdir() if p.suffix != ".png"]  # no temp files


def test_panels_titles_and_fit_legend(tmp_path):
    fracs = np.repeat(np.round(np.arange(6) / 5, 1), 3)
    path = similarity_file(tmp_path / "resnet_cifar10_task_platonic.csv", fracs, {
        "metric_overlap": np.where(fracs == 0, -1, 0.4 + 0.5 * fracs),
        "metric_ood_one": np.where(fracs == 1, -1, 0.3 + 0.1 * fracs),
        "metric_ood_all_mnist": 0.1 + 0.2 * fracs + 0.01 * (np.arange(18) % 3)})
    result = A.read_result(path)
    table = A.analyze(result)
    fig = P.plot_result(result)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["Shared classes (CIFAR-10)",
                                               "Classes of one model", "MNIST (OOD)"]
    assert axes[0].get_ylabel() == "CKA"
    assert "Task + Dataset Overlap" in fig.get_suptitle()
    for ax, column in zip(axes, table.index, strict=True):
        legend = ax.get_legend().get_texts()[0].get_text()
        assert f"{table.loc[column, 'r_squared']:.2f}" in legend and "R\u00b2" in legend
        assert f"{table.loc[column, 'slope']:.3g}" in legend
        line = next(ln for ln in ax.get_lines() if ln.get_linestyle() == "--")
        xs, ys = line.get_data()
        np.testing.assert_allclose(ys, table.loc[column, "intercept"]
                                   + table.loc[column, "slope"] * np.asarray(xs))
        # one box per fraction that has data (the -1 fraction has none)
        x, _ = result.xy(column, "cka")
        assert len(ax.patches) == len(np.unique(x))
    P.close(fig)


def test_partition_plot_has_partitions_on_x(tmp_path):
    rows = []
    for seed in range(2):
        for i, (part, m0, m1) in enumerate([("partition1", "shape", "digit"),
                                            ("partition2", "shape_digit", "shape_color"),
                                            ("partition2", "shape_digit", "digit_color"),
                                            ("partition3", "all0", "all1")]):
            rows.append([seed, "cka", part, m0, m1, *(0.1 * i + 0.01 * seed + 0.05 * k
                                                      for k in range(6))])
    path = write_csv(tmp_path / "resnet_partition_platonic.csv",
                     ["seed", "metric", "partition", "model0", "model1", "cifar10", "digit",
                      "mnist", "partition_metric", "shape", "svhn"], rows)
    fig = P.plot_result(path)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 6
    assert axes[0].get_title() == "ColorShapeDigit (val)"
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["1", "2", "3"]
    out = P.save_figure(fig, tmp_path / "p.pdf")
    assert out.read_bytes().startswith(b"%PDF")
    P.close(fig)


def test_accuracy_plots(tmp_path):
    acc = write_csv(tmp_path / "x_acc.csv", ["seed", "frac_overlap", "model_idx", "acc"],
                    [[s, f, m, 0.9 + 0.01 * f + 0.001 * s] for s in range(3)
                     for f in (0.0, 0.5, 1.0) for m in (1, 2)])
    fig = P.plot_result(acc)
    (ax,) = [a for a in fig.axes if a.get_visible()]
    assert ax.get_ylabel() == "Test accuracy (%)"
    low, high = ax.get_ylim()
    assert 85 < low < high < 95  # shown in percent
    P.close(fig)
    part = write_csv(tmp_path / "p_acc.csv", ["seed", "partition", "model", "acc"],
                     [[s, p, m, 0.99 - 0.001 * s] for s in range(3)
                      for p, m in [("partition1", "shape"), ("partition1", "digit"),
                                   ("partition3", "all0"), ("partition3", "all1")]])
    fig = P.plot_result(part)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["shape", "digit", "all"]  # all0 and all1 are one label set
    P.close(fig)


def test_fraction_labels():
    assert P._fraction_label(0.2) == "0.2"
    assert P._fraction_label(1 / 3) == "1/3"
    assert P._fraction_label(2 / 3) == "2/3"
    assert P._fraction_label(1.0) == "1"


def test_cli_plot_writes_atomically(tmp_path, capsys):
    path = similarity_file(tmp_path / "r.csv", [0, 0, 0.5, 0.5, 1, 1],
                           {"metric_overlap": [0.1, 0.2, 0.3, 0.35, 0.5, 0.6]})
    out = tmp_path / "figs" / "r.png"
    assert main(["plot", str(path), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG)
    assert [p.name for p in out.parent.iterdir()] == ["r.png"]
    assert main(["plot", str(path), "--metric", "svcca", "--out", str(out)]) == 0


@pytest.mark.parametrize("args, needle", [
    (["--out", "fig.jpg"], "unknown figure format"),
    (["--metric", "foo", "--out", "fig.png"], "unknown metric 'foo'"),
])
def test_cli_plot_bad_input(tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    path = similarity_file(tmp_path / "r.csv", [0, 0, 1, 1], {"metric_overlap": [1, 2, 3, 4]})
    assert main(["plot", str(path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not list(tmp_path.glob("fig.*"))


def test_cli_plot_bad_file(tmp_path, capsys):
    path = tmp_path / "empty.csv"
    path.write_text("")
    assert main(["plot", str(path), "--out", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "empty file" in err
    assert not (tmp_path / "f.png").exists()


@pytest.mark.parametrize("fracs", [(0.0, 0.5, 1.0), tuple(np.round(np.arange(11) / 10, 1)),
                                   (0.0, 1 / 3, 2 / 3, 1.0)])
def test_ticks_at_the_fractions_only(tmp_path, fracs):
    """A tick at each fraction of the file and nowhere else (no ticks between boxes); the
    labels drawn do not overlap, on every panel, the empty-probe fractions included."""
    x = np.repeat(fracs, 3)
    path = similarity_file(tmp_path / "resnet_cifar10_task_platonic.csv", x, {
        "metric_overlap": np.where(x == 0, -1, 0.4 + 0.5 * x),
        "metric_ood_one": np.where(x == 1, -1, 0.3 + 0.1 * x + 0.01 * (np.arange(x.size) % 3))})
    fig = P.plot_result(path)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in [a for a in fig.axes if a.get_visible()]:
        np.testing.assert_allclose(ax.get_xticks(), fracs, atol=1e-6)  # at the boxes
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        assert labels[0].get_text() == "0" and labels[-1].get_text() == "1"
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
        for left, right in zip(boxes, boxes[1:], strict=False):
            assert left.x1 < right.x0, [t.get_text() for t in labels]
    P.close(fig)


def test_realised_task_overlaps_are_one_box_per_requested_fraction(tmp_path):
    """A task split of classes of unequal size realises overlaps a little apart (0.2415,
    0.2447, ... for 0.25): one box and one tick per level, at the level's median, with
    every pair of the level in its box; the calibrated counts group the same way."""
    rng = np.random.default_rng(0)
    nominal = np.repeat([0.0, 0.25, 0.5, 1.0], 6)
    x = np.where((nominal > 0) & (nominal < 1), nominal + rng.uniform(-0.012, 0.012, nominal.size), nominal)
    levels = A.overlap_levels(x)
    np.testing.assert_allclose(levels, [0.0, np.median(x[6:12]), np.median(x[12:18]), 1.0], atol=1e-6)
    np.testing.assert_array_equal(A.level_of(x, levels), np.repeat(levels, 6))
    np.testing.assert_array_equal(A.overlap_levels([0.0, 0.1, 0.2, 0.3]), [0.0, 0.1, 0.2, 0.3])
    path = similarity_file(tmp_path / "resnet_cifar10_task_platonic.csv", x, {
        "metric_overlap": np.where(x == 0, -1, 0.4 + 0.5 * x), "metric_ood_one": 0.3 + 0.1 * x})
    fig = P.plot_result(path)
    for ax in [a for a in fig.axes if a.get_visible()]:
        np.testing.assert_allclose(ax.get_xticks(), levels, atol=1e-6)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.25", "0.5", "1"]
    P.close(fig)
    positions, groups = P._groups(x[6:], x[6:], x)
    np.testing.assert_allclose(positions, levels[1:])
    assert [len(g) for g in groups] == [6, 6, 6]
