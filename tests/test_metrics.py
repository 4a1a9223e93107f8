"""repr_sim.metrics against oracles written here from the definitions (docs/protocol.md section 3).

The oracles are deliberately naive: explicit N x N float64 kernels, H = I - 11^T/N,
trace(K H L H), eq. 5 of Song et al. (2012) as a matrix formula (itself checked against the
U-statistic over distinct quadruples), explicit masks for cknna, python-loop LCS and
Levenshtein, python-sorted neighbour lists with the documented tie rule (value descending,
then index ascending), and CCA by whitening covariance matrices for svcca.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import requires_cuda
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from repr_sim import metrics as M
from repr_sim.cli import main as cli_main

KNN_METRICS = ("cycle_knn", "mutual_knn", "lcs_knn", "edit_distance_knn")
GUARD = 1e-6


# ---- oracles ------------------------------------------------------------------------------
def o_prepare(x, q=0.95):
    x = np.asarray(x, dtype=np.float64)
    v = np.sort(np.abs(x).ravel())
    t = v[min(int(q * v.size), v.size - 1)]
    c = np.clip(x, -t, t)
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)


def o_knn(x, k):
    x = np.asarray(x, dtype=np.float64)
    kern = x @ x.T
    n = len(x)
    lists = []
    for i in range(n):
        others = sorted((j for j in range(n) if j != i), key=lambda j: (-kern[i, j], j))
        lists.append(others[:k])
    return lists


def o_lcs(x, y):
    dp = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            if x[i - 1] == y[j - 1]:
                dp[i][j] = dp[i - 1][j - 1] + 1
            else:
                dp[i][j] = max(dp[i - 1][j], dp[i][j - 1])
    return dp[-1][-1]


def o_levenshtein(x, y):
    dp = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i in range(len(x) + 1):
        dp[i][0] = i
    for j in range(len(y) + 1):
        dp[0][j] = j
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            dp[i][j] = min(dp[i - 1][j] + 1, dp[i][j - 1] + 1,
                           dp[i - 1][j - 1] + (x[i - 1] != y[j - 1]))
    return dp[-1][-1]


def o_hsic_biased(kern, lern):
    n = len(kern)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(kern @ h @ lern @ h)


def o_hsic_unbiased(kern, lern):
    """Song et al. 2012, eq. 5 (general: K~, L~ need not be symmetric)."""
    n = len(kern)
    kt, lt = kern.copy(), lern.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ kt @ lt @ one)) / (n * (n - 3))


def o_ratio(num, p, q):
    return num / (math.sqrt(p * q) + GUARD)


def o_masks(lists, n):
    mask = np.zeros((n, n))
    for i, row in enumerate(lists):
        mask[i, row] = 1.0
    return mask


def o_svcca(a, b):
    def basis(x):
        z = (x - x.mean(0)) / (x.std(0, ddof=1) + 1e-8)
        r = min(10, np.linalg.matrix_rank(z))
        return np.linalg.svd(z, full_matrices=False)[0][:, :r]

    def inv_sqrt(c):
        w, v = np.linalg.eigh(c)
        return v @ np.diag(w**-0.5) @ v.T

    ua, ub = basis(a), basis(b)
    if ua.shape[1] == 0 or ub.shape[1] == 0:
        return math.nan
    ua, ub = ua - ua.mean(0), ub - ub.mean(0)
    caa, cbb, cab = ua.T @ ua, ub.T @ ub, ua.T @ ub
    rho = np.linalg.svd(inv_sqrt(caa) @ cab @ inv_sqrt(cbb), compute_uv=False)
    return float(rho[: min(ua.shape[1], ub.shape[1])].mean())


def oracle(a, b, k=10):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = len(a)
    la, lb = o_knn(a, k), o_knn(b, k)
    kern, lern = a @ a.T, b @ b.T
    mk, ml = o_masks(la, n), o_masks(lb, n)
    mm = mk * ml
    out = {
        "mutual_knn": np.mean([len(set(x) & set(y)) / k for x, y in zip(la, lb, strict=True)]),
        "cycle_knn": np.mean([any(i in la[j] for j in lb[i]) for i in range(n)]),
        "lcs_knn": np.mean([o_lcs(x, y) for x, y in zip(la, lb, strict=True)]),
        "edit_distance_knn": 1 - np.mean([o_levenshtein(x, y) for x, y in zip(la, lb, strict=True)]) / k,
        "cka": o_ratio(o_hsic_biased(kern, lern), o_hsic_biased(kern, kern), o_hsic_biased(lern, lern)),
        "unbiased_cka": o_ratio(o_hsic_unbiased(kern, lern), o_hsic_unbiased(kern, kern),
                                o_hsic_unbiased(lern, lern)),
        "cknna": o_ratio(o_hsic_unbiased(mm * kern, mm * lern), o_hsic_unbiased(mk * kern, mk * kern),
                         o_hsic_unbiased(ml * lern, ml * lern)),
        "svcca": o_svcca(a, b),
    }
    return {name: float(v) for name, v in out.items()}


def assert_matches(got, want, rtol=1e-9, atol=1e-11):
    assert list(got) == [m for m in M.METRICS if m in want]
    for name, value in got.items():
        if name in KNN_METRICS:
            assert value == pytest.approx(want[name], abs=1e-12), name  # counts: exact
        else:
            assert value == pytest.approx(want[name], rel=rtol, abs=atol), name


# ---- data -------------------------------------------------------------------------------
def rng(seed):
    return np.random.default_rng(seed)


def random_pair(n=150, d=20, seed=0):
    r = rng(seed)
    return o_prepare(r.normal(size=(n, d))), o_prepare(r.normal(size=(n, d + 5)))


def correlated_pair(n=150, d=24, seed=1):
    r = rng(seed)
    a = r.normal(size=(n, d))
    b = a @ r.normal(size=(d, d)) + 0.5 * r.normal(size=(n, d))
    return o_prepare(a), o_prepare(b)


def clustered_pair(n=160, d=16, seed=2):
    r = rng(seed)
    centres = r.normal(size=(8, d)) * 3
    labels = r.integers(0, 8, size=n)
    a = centres[labels] + r.normal(size=(n, d))
    b = centres[labels] @ r.normal(size=(d, d)) + 2 * r.normal(size=(n, d))
    return o_prepare(a), o_prepare(b)


def low_rank_pair(n=120, seed=3):
    r = rng(seed)
    z = r.normal(size=(n, 4))
    return z @ r.normal(size=(4, 30)), (z[:, :3] + 0.1 * r.normal(size=(n, 3))) @ r.normal(size=(3, 12))


def tied_pair(n=90, seed=4):
    """Small integers with duplicated rows: many exact ties in the inner products."""
    r = rng(seed)
    base = r.integers(-2, 3, size=(30, 6)).astype(np.float64)
    a = base[r.integers(0, 30, size=n)]
    b = r.integers(-1, 2, size=(n, 5)).astype(np.float64)
    return a, b


DATASETS = {"random": random_pair, "correlated": correlated_pair, "clustered": clustered_pair,
            "low_rank": low_rank_pair, "ties": tied_pair}


# ---- the oracle itself ------------------------------------------------------------------
def test_oracle_eq5_equals_the_u_statistic():
    r = rng(5)
    n = 6
    kern = (lambda x: x @ x.T)(r.normal(size=(n, 3)))
    lern = (lambda x: x @ x.T)(r.normal(size=(n, 4)))
    terms = [kern[i, j] * lern[i, j] + kern[i, j] * lern[q, s] - 2 * kern[i, j] * lern[i, q]
             for i, j, q, s in itertools.permutations(range(n), 4)]
    assert o_hsic_unbiased(kern, lern) == pytest.approx(np.mean(terms), rel=1e-12)


# ---- every metric against the oracle ---------------------------------------------------
@pytest.mark.parametrize("topk", [10, 3])
@pytest.mark.parametrize("data", sorted(DATASETS))
def test_score_all_matches_oracle(data, topk):
    a, b = DATASETS[data]()
    assert_matches(M.score_all(a, b, topk=topk), oracle(a, b, topk))


def test_score_single_metric_matches_score_all():
    a, b = correlated_pair(n=80)
    every = M.score_all(a, b, topk=5)
    for name in M.METRICS:
        assert M.score(name, a, b, topk=5) == every[name]


def test_metric_subset_in_given_order():
    a, b = random_pair(n=40)
    got = M.score_all(a, b, metrics=["svcca", "cka", "svcca"], topk=4)
    assert list(got) == ["svcca", "cka"]


@pytest.mark.parametrize("topk", [3, 10])
def test_tiny_n(topk):
    n = topk + 2
    r = rng(6)
    a, b = o_prepare(r.normal(size=(n, 14))), o_prepare(r.normal(size=(n, 9)))
    assert_matches(M.score_all(a, b, topk=topk), oracle(a, b, topk), rtol=1e-8)


def test_hand_computed_case():
    # Worked by hand, k = 2 (neighbours 1-based; ties go to the smaller index):
    # A inner products a1.a2=4 a1.a3=0 a1.a4=2 a2.a3=2 a2.a4=4 a3.a4=4
    #   -> [2,4] [1,4] [4,2] [2,3]   (row 2: 1 and 4 tie at 4; row 4: 2 and 3 tie at 4)
    # B inner products b1.b2=0 b1.b3=1 b1.b4=-1 b2.b3=1 b2.b4=0 b3.b4=-1
    #   -> [3,2] [3,1] [1,2] [2,1]   (row 2: 1, 4 tie at 0; row 3: 1, 2 at 1; row 4: 1, 3 at -1)
    a = np.array([[2, 0], [2, 1], [0, 2], [1, 2]], dtype=np.float64)
    b = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=np.float64)
    idx, _ = M.neighbours(torch.from_numpy(a), 2)
    assert (idx + 1).tolist() == [[2, 4], [1, 4], [4, 2], [2, 3]]
    idx, _ = M.neighbours(torch.from_numpy(b), 2)
    assert (idx + 1).tolist() == [[3, 2], [3, 1], [1, 2], [2, 1]]
    got = M.score_all(a, b, metrics=KNN_METRICS, topk=2)
    # mutual: each row shares exactly one of two -> 1/2
    # cycle: i=1 via 2 (A(2) has 1), i=2 via 3 (A(3) has 2), i=3 no, i=4 via 2 -> 3/4
    # lcs: 1 in every row; edit distances 2, 2, 1, 1 -> 1 - 1.5 / 2
    assert got == {"cycle_knn": 0.75, "mutual_knn": 0.5, "lcs_knn": 1.0, "edit_distance_knn": 0.25}
    # biased CKA of 1-D features x and y: (x_c.y_c)^2 / (|x_c|^2 |y_c|^2 + 1e-6)
    # x_c = (-1.5,-.5,.5,1.5), y_c = (-.5,.5,-.5,.5): x_c.y_c = 1, |x_c|^2 = 5, |y_c|^2 = 1
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([[0.0], [1.0], [0.0], [1.0]])
    assert M.score("cka", x, y, topk=1) == pytest.approx(1.0 / (5.0 + 1e-6), rel=1e-14)


# ---- neighbours: ties, fallback, blocks -------------------------------------------------
@pytest.mark.parametrize("margin", [0, 8])
@pytest.mark.parametrize("block_rows", [None, 7])
def test_neighbours_match_oracle_with_ties(margin, block_rows):
    a, _ = tied_pair(n=70)
    idx, val = M.neighbours(torch.from_numpy(a), 6, block_rows=block_rows, margin=margin)
    assert idx.tolist() == o_knn(a, 6)
    kern = a @ a.T
    np.testing.assert_array_equal(val.numpy(), np.take_along_axis(kern, idx.numpy(), 1))


def test_neighbours_without_float32_screening(monkeypatch):
    # With TF32/bf16 products allowed the float32 bound does not hold: every row takes the
    # float64 path, with the same answer.
    a, _ = clustered_pair(n=60)
    want = M.neighbours(torch.from_numpy(a), 5)
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")
    got = M.neighbours(torch.from_numpy(a), 5)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert got[0].tolist() == o_knn(a, 5)


def test_neighbours_all_points_equal():
    x = np.ones((9, 3))
    idx, _ = M.neighbours(torch.from_numpy(x), 4)
    assert idx.tolist() == o_knn(x, 4)  # pure index order


@settings(max_examples=40, deadline=None)
@given(arrays(np.int8, st.tuples(st.integers(5, 14), st.integers(1, 4)), elements=st.integers(-2, 2)),
       st.integers(1, 3), st.integers(1, 5))
def test_neighbours_property_small_integer_matrices(x, k, block_rows):
    x = x.astype(np.float64)
    k = min(k, len(x) - 2)
    idx, _ = M.neighbours(torch.from_numpy(x), k, block_rows=block_rows, margin=1)
    assert idx.tolist() == o_knn(x, k)


@pytest.mark.parametrize("shape", [(100, 12), (40, 64)])  # the second uses N x N kernel blocks
def test_blocked_equals_whole(shape):
    n, d = shape
    r = rng(7)
    a = o_prepare(r.normal(size=(n, d)))
    b = o_prepare(a @ r.normal(size=(d, d)) + r.normal(size=(n, d)))
    whole = M.score_all(a, b, block_rows=n)
    blocked = M.score_all(a, b, block_rows=7)
    for name in M.METRICS:
        if name in KNN_METRICS or name == "cknna":
            assert blocked[name] == whole[name], name
        else:
            assert blocked[name] == pytest.approx(whole[name], rel=1e-12), name
    assert_matches(whole, oracle(a, b))


def test_default_tiles_equal_one_tile():
    # N above the default CPU tile (2048): two tiles and a transposed merge, as at real sizes.
    r = rng(21)
    a = o_prepare(r.normal(size=(2300, 16)))
    b = o_prepare(a[:, :8] @ r.normal(size=(8, 8)) + r.normal(size=(2300, 8)))
    tiled = M.score_all(a, b, metrics=["cknna", *KNN_METRICS])
    assert tiled == M.score_all(a, b, metrics=["cknna", *KNN_METRICS], block_rows=2300)


# ---- properties --------------------------------------------------------------------------
def test_identical_inputs():
    a, _ = correlated_pair(n=200)
    got = M.score_all(a, a)
    assert got["mutual_knn"] == 1.0
    assert got["lcs_knn"] == 10.0
    assert got["edit_distance_knn"] == 1.0
    assert got["svcca"] == pytest.approx(1.0, abs=1e-12)
    kern = a @ a.T
    f = o_hsic_biased(kern, kern)
    assert got["cka"] == pytest.approx(f / (f + GUARD), rel=1e-12)
    assert 1 - 1e-6 < got["cka"] < 1.0  # the guard's effect is visible but tiny
    h = o_hsic_unbiased(kern, kern)
    assert got["unbiased_cka"] == pytest.approx(h / (h + GUARD), rel=1e-12)
    assert 0.999 < got["unbiased_cka"] < 1.0
    assert got["cknna"] < 1.0 and got["cknna"] == pytest.approx(oracle(a, a)["cknna"], rel=1e-9)


def test_cycle_knn_identical_inputs():
    # Clusters of exactly k + 1 far-apart points: every neighbour is mutual -> 1.
    r = rng(8)
    k = 4
    centres = r.normal(size=(12, 10)) * 50
    a = o_prepare(np.repeat(centres, k + 1, axis=0) + r.normal(size=(12 * (k + 1), 10)))
    assert M.score("cycle_knn", a, a, topk=k) == 1.0
    # Not 1 in general: an outlier whose neighbours all have k closer points returns to no one.
    a = np.vstack([a, o_prepare(r.normal(size=(1, 10)))])
    got = M.score("cycle_knn", a, a, topk=k)
    assert got == pytest.approx(oracle(a, a, k)["cycle_knn"]) and got < 1.0


def test_joint_row_permutation():
    a, b = clustered_pair()
    perm = rng(9).permutation(len(a))
    before, after = M.score_all(a, b), M.score_all(a[perm], b[perm])
    for name in M.METRICS:
        assert after[name] == pytest.approx(before[name], rel=1e-10, abs=1e-12), name


def test_isotropic_scaling():
    # kNN lists and svcca are exactly invariant; the CKA family is invariant up to the guard,
    # whose share is ~1e-6 / HSIC: large raw features make it negligible here.
    r = rng(10)
    a = r.normal(size=(150, 12)) * 10
    b = a @ r.normal(size=(12, 12)) + 5 * r.normal(size=(150, 12))
    base = M.score_all(a, b)
    scaled = M.score_all(a * 0.25, b * 8.0)
    for name in M.METRICS:
        assert scaled[name] == pytest.approx(base[name], rel=1e-7, abs=1e-10), name


def test_independent_features_score_near_zero():
    r = rng(11)
    a, b = o_prepare(r.normal(size=(1500, 16))), o_prepare(r.normal(size=(1500, 16)))
    got = M.score_all(a, b, metrics=["cka", "unbiased_cka", "mutual_knn"])
    assert got["cka"] < 0.03  # biased CKA of independent isotropic data ~ D / N
    assert abs(got["unbiased_cka"]) < 0.01
    assert got["mutual_knn"] < 0.02  # chance level k / (N - 1) ~ 0.007


def test_negative_values_reported_as_they_are():
    for seed in range(50):
        r = rng(seed)
        a, b = r.normal(size=(14, 3)), r.normal(size=(14, 3))
        want = oracle(a, b, 3)
        if want["unbiased_cka"] < 0:
            got = M.score_all(a, b, metrics=["unbiased_cka", "cknna"], topk=3)
            assert got["unbiased_cka"] == pytest.approx(want["unbiased_cka"], rel=1e-9)
            assert got["cknna"] == pytest.approx(want["cknna"], rel=1e-9, abs=1e-12)
            return
    pytest.fail("no seed gave a negative unbiased CKA")


def test_constant_features():
    # No variance: CKA-type HSICs are 0 (0 / (0 + guard) = 0), svcca has no direction (NaN),
    # and every neighbour list is in index order (all inner products tie).
    a = np.ones((20, 4))
    b = rng(19).normal(size=(20, 4))
    got = M.score_all(a, b, topk=3)
    assert got["cka"] == 0.0 and got["unbiased_cka"] == 0.0
    assert math.isnan(got["svcca"])
    want = oracle(a, b, 3)
    for name in KNN_METRICS:
        assert got[name] == pytest.approx(want[name]), name


# ---- input kinds ------------------------------------------------------------------------
def test_inputs_left_untouched():
    a, b = random_pair(n=50)
    a32 = a.astype(np.float32)
    copies = a32.copy(), b.copy()
    M.score_all(a32, b, block_rows=8)
    M.prepare(a32)
    np.testing.assert_array_equal(a32, copies[0])
    np.testing.assert_array_equal(b, copies[1])


def test_torch_cpu_equals_numpy():
    a, b = random_pair(n=80)
    assert M.score_all(torch.from_numpy(a), torch.from_numpy(b)) == M.score_all(a, b)


def test_float32_input():
    a, b = correlated_pair(n=120)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    got = M.score_all(a32, b32)
    want = oracle(a32.astype(np.float64), b32.astype(np.float64))
    assert_matches(got, want, rtol=1e-8)


def test_prepare_matches_numpy_reference():
    r = rng(12)
    x = r.standard_t(3, size=(64, 20))
    x[5] = 0.0  # a zero row stays zero
    np.testing.assert_allclose(M.prepare(x), o_prepare(x), rtol=1e-14, atol=1e-15)
    out = M.prepare(x, q=0.5)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(out, o_prepare(x, 0.5), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(M.prepare(x, q=1.0), o_prepare(x, 1.0), rtol=1e-14, atol=1e-15)
    x32 = x.astype(np.float32)
    out32 = M.prepare(x32)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, o_prepare(x32), rtol=2e-7, atol=1e-8)
    t = M.prepare(torch.from_numpy(x32))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), out32)


def test_prepare_clamps_at_an_entry():
    # |x| = {2, ..., 40, 100}: 40 entries, position int(0.95 * 40) = 38 (0-based) of the
    # sorted values is 40, so only the -100 moves, to -40.
    x = np.arange(1.0, 41.0).reshape(8, 5)
    x[0, 0] = -100.0
    rows = x.copy()
    rows[0, 0] = -40.0
    np.testing.assert_allclose(M.prepare(x), rows / np.linalg.norm(rows, axis=1, keepdims=True),
                               rtol=1e-15)
    # numpy scalars and q = 1 (no clamping) are accepted
    np.testing.assert_allclose(M.prepare(x, q=np.float32(1.0)), x / np.linalg.norm(x, axis=1, keepdims=True))


@pytest.mark.parametrize("q", [0, -0.1, 1.5])
def test_prepare_rejects_bad_q(q):
    with pytest.raises(ValueError, match="q must be"):
        M.prepare(np.ones((3, 2)), q=q)


# ---- bad input --------------------------------------------------------------------------
def _bad(a, b, match, **kw):
    with pytest.raises(ValueError, match=match):
        M.score_all(a, b, **kw)


def test_bad_inputs():
    a, b = random_pair(n=30)
    _bad(a, b[:-1], "different N")
    _bad(a[:11], b[:11], "N must be larger than topk")
    _bad(a[:5], b[:5], "N must be larger than topk", topk=4)
    nan = a.copy()
    nan[3, 2] = np.nan
    _bad(nan, b, "a contains NaN or inf")
    inf = b.copy()
    inf[0, 0] = np.inf
    _bad(a, inf, "b contains NaN or inf")
    _bad(a[:, 0], b, "a must be 2-D")
    _bad(a, b, "unknown metric.*'ckaa'", metrics=["cka", "ckaa"])
    _bad(a, b, "topk must be a positive integer", topk=0)
    _bad(a, b, "topk must be a positive integer", topk=2.5)
    _bad(a.astype(np.int64), b, "floating point")
    _bad(a, b, "block_rows", block_rows=0)
    with pytest.raises(ValueError, match="unknown metric"):
        M.score("nope", a, b)
    with pytest.raises(ValueError, match="2-D"):
        M.prepare(np.ones(4))


def test_unbiased_needs_n_above_three():
    a, b = rng(13).normal(size=(3, 4)), rng(14).normal(size=(3, 4))
    kern, lern = a @ a.T, b @ b.T
    want = o_ratio(o_hsic_biased(kern, lern), o_hsic_biased(kern, kern), o_hsic_biased(lern, lern))
    assert M.score("cka", a, b, topk=1) == pytest.approx(want, rel=1e-12)
    for name in ("unbiased_cka", "cknna"):
        with pytest.raises(ValueError, match="N > 3"):
            M.score(name, a, b, topk=1)


# ---- CUDA ------------------------------------------------------------------------------
@requires_cuda
def test_cuda_matches_cpu():
    a, b = clustered_pair()
    cpu = M.score_all(a, b)
    for dtype in (torch.float64, torch.float32):
        ta = torch.from_numpy(a).to("cuda", dtype)
        tb = torch.from_numpy(b).to("cuda", dtype)
        got = M.score_all(ta, tb)
        ref = M.score_all(ta.cpu(), tb.cpu())
        for name in M.METRICS:
            tol = 1e-12 if dtype == torch.float64 else 1e-6
            assert got[name] == pytest.approx(ref[name], rel=tol, abs=tol), name
    assert M.score_all(torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda(), block_rows=9) == \
        pytest.approx(cpu, rel=1e-12)


@requires_cuda
def test_cuda_prepare_stays_on_device():
    x = torch.from_numpy(rng(15).normal(size=(50, 8))).float().cuda()
    out = M.prepare(x)
    assert out.is_cuda and out.dtype == torch.float32
    np.testing.assert_allclose(out.cpu().numpy(), o_prepare(x.cpu().numpy()), rtol=2e-7, atol=1e-8)


@requires_cuda
def test_cuda_and_cpu_inputs_rejected_together():
    a, b = random_pair(n=30)
    with pytest.raises(ValueError, match="different devices"):
        M.score_all(torch.from_numpy(a).cuda(), torch.from_numpy(b))


# ---- command line ---------------------------------------------------------------------
def run_cli(args, capsys):
    code = cli_main(["similarity", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_npy_and_pt(tmp_path, capsys):
    r = rng(16)
    a, b = r.normal(size=(60, 8)), r.normal(size=(60, 6)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    torch.save(torch.from_numpy(b), tmp_path / "b.pt")
    code, out, err = run_cli([tmp_path / "a.npy", tmp_path / "b.pt"], capsys)
    assert code == 0 and err == ""
    got = json.loads(out)
    assert got == pytest.approx(M.score_all(M.prepare(a), M.prepare(b)), rel=1e-12)
    code, out, _ = run_cli([tmp_path / "a.npy", tmp_path / "b.pt", "--metrics", "cka", "lcs_knn",
                            "--topk", "5", "--no-prepare"], capsys)
    assert code == 0
    want = M.score_all(a, b, metrics=["cka", "lcs_knn"], topk=5)
    assert json.loads(out) == pytest.approx(want, rel=1e-12) and list(json.loads(out)) == ["cka", "lcs_knn"]


def test_cli_writes_null_for_a_value_that_does_not_exist(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.ones((20, 3)))
    np.save(tmp_path / "b.npy", rng(20).normal(size=(20, 3)))
    code, out, _ = run_cli([tmp_path / "a.npy", tmp_path / "b.npy", "--metrics", "svcca", "cka",
                            "--topk", "3"], capsys)
    assert code == 0 and json.loads(out) == {"svcca": None, "cka": 0.0}


def _cli_error(args, capsys, match):
    code, out, err = run_cli(args, capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert match in err, err
    return err


def test_cli_errors(tmp_path, capsys):
    r = rng(17)
    good = tmp_path / "good.npy"
    np.save(good, r.normal(size=(30, 4)))
    short = tmp_path / "short.npy"
    np.save(short, r.normal(size=(29, 4)))
    flat = tmp_path / "flat.npy"
    np.save(flat, r.normal(size=30))
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((30, 4), np.nan))
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    not_tensor = tmp_path / "dict.pt"
    torch.save({"x": torch.zeros(30, 4)}, not_tensor)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    text = tmp_path / "a.csv"
    text.write_text("1,2\n")
    _cli_error([good, tmp_path / "missing.npy"], capsys, "missing.npy: no such file")
    _cli_error([good, short], capsys, "different numbers of rows")
    _cli_error([flat, good], capsys, "flat.npy must be 2-D")
    _cli_error([good, nan], capsys, "nan.npy contains NaN or inf")
    _cli_error([pickled, good], capsys, "pickled.npy: cannot read features")
    _cli_error([good, not_tensor], capsys, "dict.pt: expected a tensor, found dict")
    _cli_error([good, junk], capsys, "junk.pt: cannot read features")
    _cli_error([text, good], capsys, "a.csv: expected a .npy or .pt file")
    _cli_error([good, good, "--metrics", "cka", "bogus"], capsys, "unknown metric")
    _cli_error([good, good, "--topk", "29"], capsys, "N must be larger than topk")


def test_cli_subprocess(tmp_path):
    r = rng(18)
    np.save(tmp_path / "a.npy", r.normal(size=(40, 5)))
    np.save(tmp_path / "b.npy", r.normal(size=(40, 5)))
    ok = subprocess.run([sys.executable, "-m", "repr_sim", "similarity", str(tmp_path / "a.npy"),
                         str(tmp_path / "b.npy"), "--metrics", "mutual_knn"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert set(json.loads(ok.stdout)) == {"mutual_knn"}
    bad = subprocess.run([sys.executable, "-m", "repr_sim", "similarity", str(tmp_path / "a.npy"),
                          str(tmp_path / "nope.npy")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
