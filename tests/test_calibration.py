"""repr_sim.metrics.calibration: null-calibrated similarity (docs/protocol.md section 5).

Exactness is checked against the published implementation, the PyPI package
`calibrated-similarity` (its `calibrate` and `calibrate_layers` loops re-score every
permutation with this project's metric: neighbours searched afresh on B[pi], kernels
recomputed), fed the same permutations through its `perm_fn`. The fast path's null values
are also compared with direct scores of the permuted features, and its bit-parallel list
comparisons with plain dynamic programmes written here.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from conftest import requires_cuda

from repr_sim import metrics as M
from repr_sim.cli import main as cli_main
from repr_sim.metrics import calibration as C

DISCRETE = ("cycle_knn", "mutual_knn", "lcs_knn", "edit_distance_knn")


def features(n, d_a, d_b, *, related, seed):
    """Prepared float32 features; related pairs share a 6-d latent, unrelated ones do not."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 6))
    z_b = z if related else rng.standard_normal((n, 6))
    a = np.maximum(z @ rng.standard_normal((6, d_a)), 0) + 0.3 * rng.random((n, d_a))
    b = np.maximum(z_b @ rng.standard_normal((6, d_b)), 0) + 0.3 * rng.random((n, d_b))
    return M.prepare(a.astype(np.float32)), M.prepare(b.astype(np.float32))


class CachedScores:
    """This project's metric as the reference's `sim`: score_all of (X, Y[pi]) computed once
    per distinct pair of inputs and read per metric (the reference calls sim per metric)."""

    def __init__(self, topk):
        self.topk = topk
        self.cache = {}

    def sim(self, name):
        def sim(x, y):
            key = (x.numpy().tobytes(), y.numpy().tobytes())
            if key not in self.cache:
                self.cache[key] = M.score_all(x, y, topk=self.topk)
            return self.cache[key][name]
        return sim


def feeder(perms):
    """A perm_fn handing out the rows of `perms` in order."""
    rows = iter(torch.from_numpy(perms))
    return lambda n, device: next(rows).to(device)


@pytest.fixture
def one_thread():
    """Hundreds of tiny problems: a second thread only adds hand-over costs (large ones on a
    busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_matches_reference(mine: C.Calibrated, cal, p, tau, k_perm, name):
    # the reference compares float32 casts: a tie there may move p by one count
    count = 0 if name.split()[-1] in DISCRETE else 1
    # p values as counts (the reference's p is a float32)
    assert abs(round(mine.p_value * (k_perm + 1)) - round(float(p) * (k_perm + 1))) <= count, name
    assert mine.tau == pytest.approx(float(tau), abs=1e-6 * mine.s_max), name
    assert mine.calibrated == pytest.approx(float(cal), abs=1e-5), name
    assert mine.n_permutations == k_perm


# ---- the numbers ----------------------------------------------------------------------------
def test_calibrate_values_by_hand():
    null = np.array([0.1, 0.4, 0.2, 0.5, 0.3, 0.45, 0.0, 0.35, 0.25])  # K = 9
    r = C.calibrate_values(0.4, null, alpha=0.2, s_max=1.0)
    # combined sorted: 0 .1 .2 .25 .3 .35 .4 .4 .45 .5; ceil(0.8 * 10) = 8th smallest = 0.4
    assert r.tau == 0.4
    assert r.p_value == pytest.approx((1 + 3) / 10)  # 0.4, 0.5, 0.45 are >= 0.4
    assert r.calibrated == 0.0
    r = C.calibrate_values(0.8, null, alpha=0.2, s_max=2.0)
    assert r.tau == 0.45  # 8th smallest of {null, 0.8}
    assert r.p_value == pytest.approx(0.1)
    assert r.calibrated == pytest.approx((0.8 - 0.45) / (2.0 - 0.45))
    assert r.s_max == 2.0 and r.n_permutations == 9


def test_nan_observed_score_is_never_significant():
    r = C.calibrate_values(math.nan, np.array([0.1, 0.2]), alpha=0.05)
    assert math.isnan(r.p_value) and math.isnan(r.calibrated)


def test_s_max():
    assert C.metric_s_max("lcs_knn", 7) == 7.0
    assert all(C.metric_s_max(m, 7) == 1.0 for m in M.METRICS if m != "lcs_knn")


# ---- against the reference package ----------------------------------------------------------
def reference():
    """The published package, imported by the tests that compare with it (not at module
    import: a machine without it, the GPU check's, still runs this module's other tests)."""
    return pytest.importorskip(
        "calibrated_similarity",
        reason="the reference package calibrated-similarity is not installed here")


SHAPES = [  # N, D_a, D_b, related, K, topk
    (50, 8, 8, True, 49, 10),
    (150, 32, 100, False, 30, 10),
    (120, 512, 256, True, 20, 10),  # CKA's null from the two kernels
    (500, 64, 16, False, 20, 5),
]


@pytest.mark.parametrize("n, d_a, d_b, related, k_perm, topk", SHAPES)
def test_matches_reference_package(n, d_a, d_b, related, k_perm, topk, one_thread):
    a, b = features(n, d_a, d_b, related=related, seed=n)
    perms = C.draw_permutations(n, k_perm, seed=1)
    ref_calibrate = reference().calibrate
    mine = C.calibrate_all(a, b, permutations=perms, topk=topk)
    scores = CachedScores(topk)
    for name in M.METRICS:
        cal, p, tau = ref_calibrate(torch.from_numpy(a), torch.from_numpy(b), scores.sim(name),
                                    K=k_perm, smax=C.metric_s_max(name, topk),
                                    perm_fn=feeder(perms))
        assert_matches_reference(mine[name], cal, p, tau, k_perm, name)
        assert mine[name].score == M.score_all(a, b, topk=topk)[name]  # the observed score
    if related:
        assert all(mine[name].p_value == 1 / (k_perm + 1) for name in M.METRICS)


def test_layers_match_reference_package(one_thread):
    ref_calibrate_layers = reference().calibrate_layers
    n, k_perm = 60, 15
    rng = np.random.default_rng(5)
    a_layers = [features(n, d, 8, related=True, seed=s)[0] for s, d in ((1, 12), (2, 40))]
    b_layers = [features(n, 16, d, related=True, seed=s)[1] for s, d in ((1, 20), (3, 8), (4, 64))]
    b_layers[0] = 0.5 * a_layers[0][:, :12] + 0.1 * rng.random((n, 12)).astype(np.float32)
    perms = C.draw_permutations(n, k_perm, seed=2)
    scores = CachedScores(10)  # shared by both aggregates: each layer pair scored once
    for agg, names in (("max", M.METRICS), ("mean", ("cka", "mutual_knn", "lcs_knn"))):
        for name in names:
            mine = C.calibrate_layers(a_layers, b_layers, name, agg=agg, permutations=perms)
            cal, p, tau = ref_calibrate_layers(
                [torch.from_numpy(x) for x in a_layers], [torch.from_numpy(x) for x in b_layers],
                scores.sim(name), agg=agg, K=k_perm, smax=C.metric_s_max(name, 10),
                perm_fn=feeder(perms))
            assert_matches_reference(mine, cal, p, tau, k_perm, f"{agg} {name}")


def test_score_layers_is_score_all_per_pair():
    a_layers = [features(60, d, 8, related=True, seed=d)[0] for d in (8, 24)]
    b_layers = [features(60, 8, d, related=True, seed=d)[1] for d in (8, 16, 32)]
    for name in ("cka", "cknna", "lcs_knn"):
        got = C.score_layers(a_layers, b_layers, name, topk=5)
        want = [[M.score(name, x, y, topk=5) for y in b_layers] for x in a_layers]
        np.testing.assert_array_equal(got, want)


# ---- the fast null against direct scores ----------------------------------------------------
@pytest.mark.parametrize("n, d_a, d_b, topk, kernels",
                         [(70, 256, 300, 4, True), (90, 16, 24, 10, False),
                          (80, 20, 20, 63, False)])
def test_null_values_are_direct_scores_of_permuted_b(n, d_a, d_b, topk, kernels, one_thread):
    # CKA's null from the kernels or from float32 cross products; k = 63 is above the
    # bit-parallel limit (the plain dynamic programme)
    a, b = features(n, d_a, d_b, related=True, seed=3)
    sides = [M._Side(torch.from_numpy(x), topk, None) for x in (a, b)]
    assert C._Null(*sides, ["cka"], [topk])._use_kernels == kernels
    perms = C.draw_permutations(n, 12 if topk < 63 else 4, seed=4)  # k = 63 scores slowly
    _, nulls = C.calibrate_all(a, b, permutations=perms, topk=topk, return_null=True)
    direct = [M.score_all(a, b[p], topk=topk) for p in perms]
    for name in M.METRICS:
        want = np.array([d[name] for d in direct])
        if name in DISCRETE:
            np.testing.assert_array_equal(nulls[name], want, err_msg=name)
        else:
            np.testing.assert_allclose(nulls[name], want, rtol=0, atol=1e-6, err_msg=name)


def test_several_k_from_one_search():
    a, b = features(120, 16, 16, related=True, seed=6)
    perms = C.draw_permutations(120, 15, seed=0)
    several = C.calibrate_all(a, b, permutations=perms, topk=[10, 3, 6])
    assert set(several) == {f"{m}@{k}" for m in C.K_DEPENDENT for k in (3, 6, 10)} | {
        "cka", "unbiased_cka", "svcca"}
    for k in (3, 6, 10):
        one = C.calibrate_all(a, b, permutations=perms, topk=k)
        for name in M.METRICS:
            key = f"{name}@{k}" if name in C.K_DEPENDENT else name
            got, want = several[key], one[name]
            assert got.p_value == want.p_value and got.s_max == want.s_max, key
            assert got.tau == pytest.approx(want.tau, abs=1e-12)
            assert got.score == pytest.approx(M.score(name, a, b, topk=k), abs=1e-12)
            assert got.k == (k if name in C.K_DEPENDENT else None)
    assert several["lcs_knn@6"].s_max == 6.0


# ---- bit-parallel list comparisons ----------------------------------------------------------
def lcs_dp(x, y):
    table = np.zeros((len(x) + 1, len(y) + 1), dtype=int)
    for i, xi in enumerate(x):
        for j, yj in enumerate(y):
            skip = max(table[i, j + 1], table[i + 1, j])
            table[i + 1, j + 1] = table[i, j] + 1 if xi == yj else skip
    return table[-1, -1]


def edit_dp(x, y):
    table = np.zeros((len(x) + 1, len(y) + 1), dtype=int)
    table[:, 0], table[0, :] = np.arange(len(x) + 1), np.arange(len(y) + 1)
    for i, xi in enumerate(x):
        for j, yj in enumerate(y):
            table[i + 1, j + 1] = min(table[i, j + 1] + 1, table[i + 1, j] + 1,
                                      table[i, j] + (xi != yj))
    return table[-1, -1]


@pytest.mark.parametrize("k", [1, 2, 5, 13, 29, 30, 62])  # int32 masks up to 29
def test_bit_parallel_lists(k):
    rng = np.random.default_rng(k)
    pairs = []
    for _ in range(150):
        pool = rng.permutation(k + int(rng.integers(0, k + 2)))  # overlaps from none to all
        pairs.append((rng.permutation(pool)[:k], rng.permutation(pool)[:k]))
    x = torch.tensor(np.array([p[0] for p in pairs]))
    y = torch.tensor(np.array([p[1] for p in pairs]))
    eq = x[:, :, None] == y[:, None, :]
    masks = C._bit_masks(eq.any(dim=2), eq.long().argmax(dim=2), k)
    assert C._lcs_bits(masks, k).tolist() == [lcs_dp(*p) for p in pairs]
    assert C._edit_bits(masks, k).tolist() == [edit_dp(*p) for p in pairs]


# ---- properties -----------------------------------------------------------------------------
def test_independent_features_give_uniform_p_values(one_thread):
    """Rows iid and A, B independent: the observed pairing is exchangeable with the permuted
    ones, so for a metric without ties p is uniform on {1, ..., K+1} / (K+1); with ties
    (the discrete kNN metrics) P(p <= x) <= x. 300 seeded draws, K = 19: the largest gap
    between the empirical and the uniform CDF stays below 0.094 (the 1% Kolmogorov-Smirnov
    critical value for 300 draws, conservative for a discrete law)."""
    k_perm, draws = 19, 300
    rng = np.random.default_rng(0)
    p = {name: [] for name in M.METRICS}
    for seed in range(draws):
        a = M.prepare(rng.standard_normal((40, 6)).astype(np.float32))
        b = M.prepare(rng.standard_normal((40, 5)).astype(np.float32))
        for name, r in C.calibrate_all(a, b, n_permutations=k_perm, seed=seed, topk=5).items():
            p[name].append(r.p_value)
    grid = np.arange(1, k_perm + 2) / (k_perm + 1)
    for name, values in p.items():
        cdf = (np.array(values)[:, None] <= grid + 1e-12).mean(axis=0)
        if name in DISCRETE:
            assert (cdf - grid).max() < 0.094, name
        else:
            assert np.abs(cdf - grid).max() < 0.094, name


def test_identical_features_are_fully_significant():
    a, _ = features(100, 16, 16, related=True, seed=7)
    results = C.calibrate_all(a, a.copy(), n_permutations=49, seed=3)
    for name, r in results.items():
        assert r.p_value == 1 / 50, name
        assert r.calibrated > 0.99, name


def test_permuting_both_inputs_changes_nothing():
    n = 90
    a, b = features(n, 12, 20, related=True, seed=8)
    perms = C.draw_permutations(n, 25, seed=9)
    q = np.random.default_rng(10).permutation(n)
    q_inv = np.argsort(q)
    # row i of (b[q])[perm'] must pair with a[q][i] as b[perm][q[i]] pairs with a[q[i]]
    conjugated = np.stack([q_inv[p[q]] for p in perms])
    first, null_1 = C.calibrate_all(a, b, permutations=perms, return_null=True)
    second, null_2 = C.calibrate_all(a[q], b[q], permutations=conjugated, return_null=True)
    for name in M.METRICS:
        assert second[name].score == pytest.approx(first[name].score, abs=1e-12), name
        np.testing.assert_allclose(null_2[name], null_1[name], rtol=0, atol=1e-6, err_msg=name)
        assert second[name].p_value == first[name].p_value, name


def test_seed_reproduces_and_draws_with_numpy():
    a, b = features(60, 8, 8, related=False, seed=11)
    first = C.calibrate_all(a, b, n_permutations=10, seed=4)
    assert C.calibrate_all(a, b, n_permutations=10, seed=4) == first
    perms = C.draw_permutations(60, 3, seed=4)
    rng = np.random.default_rng(4)
    np.testing.assert_array_equal(perms, [rng.permutation(60) for _ in range(3)])
    assert M.calibrate_all is C.calibrate_all  # re-exported by repr_sim.metrics


@requires_cuda
def test_cuda_matches_cpu():
    a, b = features(400, 64, 64, related=False, seed=12)
    cpu = C.calibrate_all(a, b, n_permutations=50, seed=1, topk=[5, 10])
    gpu = C.calibrate_all(torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda(),
                          n_permutations=50, seed=1, topk=[5, 10])
    for key, r in cpu.items():
        assert abs(gpu[key].p_value - r.p_value) * 51 <= (0 if key.split("@")[0] in DISCRETE else 1)
        assert gpu[key].calibrated == pytest.approx(r.calibrated, abs=1e-5), key


# ---- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"n_permutations": 0}, "positive integer"),
    ({"alpha": 0.0}, r"alpha must be in \(0, 1\)"),
    ({"alpha": 1.0}, r"alpha must be in \(0, 1\)"),
    ({"permutations": np.zeros((3, 19), dtype=int)}, "shape"),
    ({"permutations": np.arange(20)}, "shape"),
    ({"permutations": np.zeros((0, 20), dtype=int)}, "shape"),
    ({"permutations": np.zeros((2, 20))}, "integer"),
    ({"permutations": np.stack([np.arange(20), np.r_[np.arange(19), 0]])},
     "row 1 is not a permutation"),
    ({"topk": 19}, r"N must be larger than topk \+ 1"),
    ({"topk": [3, 19]}, r"N must be larger than topk \+ 1"),
    ({"topk": []}, "topk"),
])
def test_bad_input(kwargs, match):
    a, b = features(20, 4, 4, related=True, seed=0)
    with pytest.raises(ValueError, match=match):
        C.calibrate_all(a, b, **kwargs)


def test_bad_layer_input():
    a, b = features(20, 4, 4, related=True, seed=0)
    with pytest.raises(ValueError, match="agg"):
        C.calibrate_layers([a], [b], "cka", agg="median")
    with pytest.raises(ValueError, match="non-empty list"):
        C.score_layers([], [b], "cka")
    with pytest.raises(ValueError, match="different N"):
        C.score_layers([a], [b[:10]], "cka")


# ---- command line ---------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path):
    a, b = features(60, 8, 6, related=True, seed=13)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    return tmp_path / "a.npy", tmp_path / "b.npy"


def run_cli(args, capsys):
    code = cli_main(["similarity", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_table(files, capsys):
    code, out, err = run_cli([*files, "--calibrate", "--permutations", "19", "--topk", "3", "5",
                              "--metrics", "cka", "lcs_knn"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[1].split() == ["metric", "k", "raw", "null", "mean", "tau", "calibrated", "p"]
    want = C.calibrate_all(M.prepare(np.load(files[0])), M.prepare(np.load(files[1])),
                           n_permutations=19, topk=[3, 5], metrics=["cka", "lcs_knn"])
    rows = {(line.split()[0], line.split()[1]): line.split()[2:] for line in lines[2:]}
    assert set(rows) == {("cka", "-"), ("lcs_knn", "3"), ("lcs_knn", "5")}
    got = rows[("lcs_knn", "5")]
    r = want["lcs_knn@5"]
    assert [float(got[0]), float(got[2]), float(got[3]), float(got[4])] == pytest.approx(
        [r.score, r.tau, r.calibrated, r.p_value], abs=1e-4)


def test_cli_without_calibrate_is_unchanged(files, capsys):
    code, out, _ = run_cli([*files, "--topk", "5"], capsys)
    assert code == 0
    want = M.score_all(M.prepare(np.load(files[0])), M.prepare(np.load(files[1])), topk=5)
    assert json.loads(out) == pytest.approx(want)


@pytest.mark.parametrize("args, match", [
    (["--permutations", "0"], "positive integer"),
    (["--alpha", "1.5"], r"alpha must be in \(0, 1\)"),
    (["--topk", "59"], r"N must be larger than topk \+ 1"),
])
def test_cli_bad_input_is_one_line(files, capsys, args, match):
    code, out, err = run_cli([*files, "--calibrate", *args], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert re.search(match, err)


def test_cli_several_k_need_calibrate(files, capsys):
    code, _, err = run_cli([*files, "--topk", "3", "5"], capsys)
    assert code == 2 and "need --calibrate" in err
