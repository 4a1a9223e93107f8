"""repr_sim.consequences: transfer success against similarity (hand-made files with answers
from scipy/scikit-learn or worked out here), the published ResNet/ViT pairs, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from _result_fixtures import write_csv
from scipy.stats import spearmanr
from sklearn.feature_selection import mutual_info_regression
from test_v2_analysis import v2_reference

from repr_sim import consequences as C
from repr_sim import plots as P
from repr_sim.cli import main

FRACS = (0.0, 0.5, 1.0)


def pair_files(folder, *, asr_rows=None, jailbreak=False, name="resnet18_tinyimagenet"):
    """A similarity file (cka and svcca rows, two probes) and its transfer file, rows in
    different orders; the values are returned for the answers."""
    rng = np.random.default_rng(1)
    sims, rows = {}, []
    for seed in range(4):
        for frac in FRACS:
            a = 0.5 + 0.3 * frac + 0.05 * rng.standard_normal()
            b = -1.0 if frac == 1.0 else 0.2 + 0.1 * rng.standard_normal()
            sims[(seed, frac)] = (a, b)
            rows.append([seed, "cka", frac, a, b])
            rows.append([seed, "svcca", frac, 0.1 * seed, 0.2])
    sim = write_csv(folder / f"ds_platonic_ffcv_{name}.csv",
                    ["seed", "metric", "frac_overlap", "metric_a", "metric_b"], rows)
    asr = {k: 0.2 + 0.5 * v[0] + 0.02 * rng.standard_normal() for k, v in sims.items()}
    if asr_rows is None:
        asr_rows = [[s, f, 0.9, asr[(s, f)]] for (s, f) in reversed(list(asr))]
    header = ["seed", "frac_overlap", "normal_asr", "transfer_asr"]
    if jailbreak:  # other column order, two rows per pair
        header = ["seed", "frac_overlap", "transfer_asr", "normal_asr"]
        asr_rows = [r for s, f, _, v in asr_rows for r in ([s, f, v - 0.1, 0.9],
                                                           [s, f, v + 0.1, 0.8])]
    kind = "jailbreaking" if jailbreak else "transfer_asr"
    path = write_csv(folder / f"ds_{kind}_{name}.csv", header, asr_rows)
    return sim, path, sims, asr


def test_partial_rank_correlation_is_the_textbook_formula():
    rng = np.random.default_rng(0)
    z = np.repeat(np.arange(5) / 4, 6)
    x = z + rng.standard_normal(30)
    y = z + 0.5 * x + rng.standard_normal(30)
    rxy, rxz, ryz = (spearmanr(a, b)[0] for a, b in ((x, y), (x, z), (y, z)))
    expected = (rxy - rxz * ryz) / np.sqrt((1 - rxz ** 2) * (1 - ryz ** 2))
    rho, _ = C.partial_rank_correlation(x, y, z, n_perm=0)
    assert rho == pytest.approx(expected, abs=1e-12)


def test_within_level_permutation_p_matches_full_enumeration():
    """Two overlap levels of four rows: all 4! x 4! within-level permutations enumerated."""
    z = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=float)
    x = np.array([0.1, 0.4, 0.2, 0.3, 0.9, 0.6, 0.8, 0.7])
    y = np.array([0.15, 0.3, 0.35, 0.2, 0.7, 0.75, 0.9, 0.6])
    rho, p = C.partial_rank_correlation(x, y, z, n_perm=20000, seed=3)
    hits = total = 0
    for a in itertools.permutations(range(4)):
        for b in itertools.permutations(range(4, 8)):
            xp = x[list(a) + list(b)]
            r, _ = C.partial_rank_correlation(xp, y, z, n_perm=0)
            hits += abs(r) >= abs(rho) - 1e-12
            total += 1
    assert p == pytest.approx(hits / total, abs=0.015)


def test_overlap_alone_is_not_significant_after_control():
    """Similarity and transfer both rise with overlap but are unrelated within a level: the
    plain Spearman is large and significant, the partial correlation is not."""
    rng = np.random.default_rng(5)
    z = np.repeat(np.arange(6) / 5, 8)
    x, y = z + 0.1 * rng.standard_normal(48), z + 0.1 * rng.standard_normal(48)
    stats = C.probe_stats(x, y, z, n_perm=999)
    assert stats["spearman_rho"] > 0.8 and stats["spearman_p"] < 0.01
    assert abs(stats["partial_rho"]) < 0.35 and stats["partial_p"] > 0.05


def test_hand_made_pair(tmp_path):
    sim_path, asr_path, sims, asr = pair_files(tmp_path)
    sim, attack = C.read_pair(sim_path, asr_path)
    table = C.consequences(sim, attack, n_perm=199)
    assert list(table.index.get_level_values("metric").unique()) == ["cka", "svcca"]
    keys = list(sims)
    x = np.array([sims[k][0] for k in keys])
    y = np.array([asr[k] for k in keys])
    row = table.loc[("cka", "metric_a")]
    assert row["n"] == 12
    assert row["spearman_rho"] == pytest.approx(spearmanr(x, y)[0], abs=1e-12)
    # rows in the similarity file's order (seed, then overlap), as written
    mi = mutual_info_regression(x.reshape(-1, 1), y, random_state=42)[0]
    assert row["mutual_information"] == pytest.approx(mi, abs=1e-12)
    z = np.array([k[1] for k in keys])
    assert row["overlap_rho"] == pytest.approx(spearmanr(z, y)[0], abs=1e-12)
    assert table.loc[("cka", "metric_b"), "n"] == 8  # the -1 rows (overlap 1) left out


def test_jailbreak_directions_are_averaged(tmp_path):
    sim_path, asr_path, sims, asr = pair_files(tmp_path, jailbreak=True)
    sim, attack = C.read_pair(sim_path, asr_path)
    joined = C.join(sim, attack, "cka")
    assert len(joined) == 12
    for _, r in joined.iterrows():
        assert r["transfer_asr"] == pytest.approx(asr[(int(r["seed"]), r["frac_overlap"])])


def test_cli_table_and_plot(tmp_path, capsys):
    sim_path, asr_path, _, _ = pair_files(tmp_path)
    out, fig = tmp_path / "t.csv", tmp_path / "f.png"
    assert main(["consequences", str(sim_path), str(asr_path), "--permutations", "99",
                 "--out", str(out), "--plot", str(fig)]) == 0
    assert "12 pairs joined" in capsys.readouterr().out
    assert out.read_text().startswith("metric,probe,n,spearman_rho")
    assert fig.read_bytes().startswith(b"\x89PNG")


def test_scatter_is_coloured_by_overlap(tmp_path):
    sim_path, asr_path, _, _ = pair_files(tmp_path)
    sim, attack = C.read_pair(sim_path, asr_path)
    table = C.consequences(sim, attack, metrics=("cka",), n_perm=0)
    fig = P.plot_consequences(C.join(sim, attack, "cka"), table.xs("cka", level="metric"))
    panels = [ax for ax in fig.axes if ax.collections and ax.get_xlabel() == "CKA"]
    assert len(panels) == 2
    colours = panels[0].collections[0].get_array()
    assert sorted(set(np.round(colours, 6))) == list(FRACS)
    assert any(ax.get_ylabel() == "Overlap fraction" for ax in fig.axes)  # the colour bar
    P.close(fig)


@pytest.mark.parametrize("case, needle", [
    ("no common pairs", "no matching similarity file: no (seed, frac_overlap) in common"),
    ("other model", "no matching similarity file: it is for model resnet50"),
    ("swapped", "given first; the order is SIM_FILE ASR_FILE"),
    ("two sims", "expected a transfer-attack file"),
])
def test_bad_pairs_are_one_line(tmp_path, capsys, case, needle):
    sim_path, asr_path, _, _ = pair_files(tmp_path)
    args = [str(sim_path), str(asr_path)]
    if case == "no common pairs":
        write_csv(asr_path, ["seed", "frac_overlap", "normal_asr", "transfer_asr"],
                  [[9, 0.5, 0.9, 0.3]])
    elif case == "other model":
        (tmp_path / "o").mkdir()
        _, other, _, _ = pair_files(tmp_path / "o", name="resnet50_tinyimagenet")
        args = [str(sim_path), str(other)]
    elif case == "swapped":
        args = args[::-1]
    else:
        args = [str(sim_path), str(sim_path)]
    assert main(["consequences", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_folder_with_a_transfer_file_but_no_similarity_file(tmp_path, capsys):
    _, asr_path, _, _ = pair_files(tmp_path)
    (tmp_path / "ds_platonic_ffcv_resnet18_tinyimagenet.csv").unlink()
    assert main(["consequences", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no matching similarity file" in err, err


def test_published_resnet_vit_pairs(tmp_path):
    """The 16 ResNet/ViT TinyImageNet pairs of files (dataset and task overlap, 8 models)."""
    folder = v2_reference(tmp_path / "v2")
    results = [r for r in C.scan_folder(folder) if "tinyimagenet" in r.path.name
               and (r.kind == "transfer" or "platonic" in r.path.name)]
    table = C.folder_table(results, metrics=("cka",), n_perm=99)
    files = table.index.get_level_values("file").unique()
    assert len(files) == 16
    # one pair checked against an independent join (pandas) and scipy
    sim = pd.read_csv(folder / "different_model_size_ds/ds_platonic_ffcv_resnet18_tinyimagenet.csv")
    asr = pd.read_csv(folder / "different_model_size_ds/ds_transfer_asr_resnet18_tinyimagenet.csv")
    joined = sim[sim["metric"] == "cka"].merge(asr, on=["seed", "frac_overlap"])
    row = table.loc[("ds_transfer_asr_resnet18_tinyimagenet.csv", "cka", "metric_tinyimagenet")]
    assert row["n"] == 24
    assert row["spearman_rho"] == pytest.approx(
        spearmanr(joined["metric_tinyimagenet"], joined["transfer_asr"])[0], abs=1e-12)
    task = table.loc[("task_transfer_asr_vit_tiny_patch16_224_tinyimagenet.csv", "cka")]
    # overlap 0: no attack (and no shared class); overlap 1: no class of one model
    assert list(task["n"]) == [20, 16]


def test_a_probe_with_too_few_transfer_rows_is_left_out_unless_asked_for(tmp_path):
    """metric_b has a value at two pairs only (-1 elsewhere): the all-columns table leaves
    it out, asking for it by name is one clear error."""
    rng = np.random.default_rng(3)
    rows = [[seed, "cka", frac, 0.5 + 0.3 * frac + 0.05 * rng.standard_normal(),
             0.3 if (seed, frac) in ((0, 0.0), (1, 0.0)) else -1.0]
            for seed in range(4) for frac in FRACS]
    sim_path = write_csv(tmp_path / "ds_platonic_ffcv_resnet18_tinyimagenet.csv",
                         ["seed", "metric", "frac_overlap", "metric_a", "metric_b"], rows)
    asr_path = write_csv(tmp_path / "ds_transfer_asr_resnet18_tinyimagenet.csv",
                         ["seed", "frac_overlap", "normal_asr", "transfer_asr"],
                         [[r[0], r[2], 0.9, 0.1 + 0.5 * r[3]] for r in rows])
    sim, asr = C.read_pair(sim_path, asr_path)
    table = C.consequences(sim, asr, n_perm=99)
    assert list(table.index) == [("cka", "metric_a")] and table.loc[("cka", "metric_a"), "n"] == 12
    with pytest.raises(C.UserError, match="metric_b.*2 rows with a transfer value"):
        C.consequences(sim, asr, probes=("metric_b",), n_perm=99)
    assert main(["consequences", str(tmp_path)]) == 0
