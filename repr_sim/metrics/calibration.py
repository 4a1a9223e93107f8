"""Null-calibrated similarity (docs/protocol.md section 5): a p-value, a threshold and a calibrated
score for each of the eight metrics, at a small multiple of the cost of the raw scores.

Public API (importable from repr_sim.metrics)
    Calibrated            score, calibrated, p_value, tau, s_max, n_permutations, k
    calibrate_all(a, b, *, permutations=None, n_permutations=200, seed=0, alpha=0.05,
                  metrics=METRICS, topk=10, return_null=False) -> {key: Calibrated}
    score_layers(a_layers, b_layers, metric, *, topk=10) -> L_A x L_B numpy matrix
    calibrate_layers(a_layers, b_layers, metric, *, agg="max", ...) -> Calibrated
    calibrate_values(score, null, *, alpha, s_max) -> Calibrated  (the numbers alone)
    draw_permutations(n, n_permutations, seed) -> K x N int64 array
    metric_s_max(metric, k) -> the metric's largest attainable value

The numbers, for an observed score s and null values s_1..s_K (scores of A against B with
its rows permuted, B[pi_k]):
    p     = (1 + #{k : s_k >= s}) / (K + 1)                (add-one, right tail)
    tau   = the ceil((1 - alpha)(K + 1))-th smallest of {s, s_1..s_K}
    score = clamp((s - tau) / max(s_max - tau, 1e-12), 0, 1)
s_max is k for lcs_knn and 1 for the other metrics. A NaN observed score has NaN p and
calibrated score. NaN null values never count as >= s and sort above every number (as in
numpy and torch, and so in the reference package `calibrated-similarity`), so they can
only raise tau. The observed scores are exactly score_all's. Comparisons are in float64
(the reference package compares float32 casts: where a null value and the observed score
round to the same float32, its p-value can be one count, 1 / (K + 1), higher).

Permutations: row k of `permutations` (K x N) is applied to the rows of B: B[pi_k]. Without
it they are drawn on the CPU by numpy's default_rng(seed) (row k = the k-th call of
rng.permutation(N)), so a seed gives the same null on every device.

Why it is cheap. A row permutation of B changes nothing in B itself, only its pairing with
A, so every piece of B is reused:
* kNN lists: the neighbours of row i of B[pi] are B's neighbours of pi(i), relabelled by
  pi^-1 (no new search); the kernel values there are B's. A relabelled list equals a fresh
  search on B[pi] except where two neighbours' float64 inner products are exactly equal
  (a tie): the search orders ties by ascending index in B[pi], the relabelled list by
  ascending index in B, so the order (and, for a tie at the k-th place, the member) can
  differ. On features without exact ties (continuous features, no duplicate rows) they
  are identical.
* Matching A's lists against the relabelled ones: a sort and a binary search per row
  (O(N k log k) per permutation, no k x k tables); cycle_knn looks the reverse edges up in
  one sorted key array of A's lists; lcs_knn and edit_distance_knn use bit-parallel
  dynamic programmes (Allison-Dix for the LCS, Myers/Hyyro for the edit distance; lists
  of distinct indices make each match mask a single bit), k steps of word operations per
  row, for k <= 62 (the plain k x k programme above that).
* cknna: A's pattern is fixed, so the transposed entries L~^T are a fixed gather.
* cka, unbiased_cka: ||A_c^T P B_c||_F^2 (centred features) is the only term that changes
  (with dA . P dB, an O(N) sum). It is one D_a x D_b cross product per permutation in
  float32 (accumulated in float64; within about 1e-6 of float64 for these scores), or,
  when that is about 1000 times N^2 or more and two N x N float64 kernels fit the memory
  budget, <K_c, P L_c P^T> summed from the kernels (O(N^2) gathers per permutation).
* svcca: the column standardisation and the top singular directions of B[pi] are those of
  B with permuted rows, so only the 10 x 10 cross product of the two bases changes.
Permutations are processed in chunks sized to the metrics' memory budget.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from . import scores as M
from .scores import METRICS

K_DEPENDENT = ("cycle_knn", "mutual_knn", "lcs_knn", "cknna", "edit_distance_knn")
_BIT_PARALLEL_MAX_K = 62  # masks of k bits plus a carry fit a signed 64-bit integer
_CALIBRATION_EPS = 1e-12
_BATCH_BYTES = 32 * 2**20  # permuted copies of B gathered at once for one batched product


@dataclass(frozen=True)
class Calibrated:
    """One metric's observed score and its calibration against the permutation null."""

    score: float
    calibrated: float
    p_value: float
    tau: float
    s_max: float
    n_permutations: int
    k: int | None = None  # the neighbour count for the kNN-based metrics, else None


# ---- the numbers ----------------------------------------------------------------------------
def metric_s_max(metric: str, k: int) -> float:
    """The largest value a metric attains: k for lcs_knn (a common subsequence of two k-lists),
    1 for the others."""
    return float(k) if metric == "lcs_knn" else 1.0


def calibrate_values(score: float, null, *, alpha: float = 0.05, s_max: float = 1.0,
                     k: int | None = None) -> Calibrated:
    """p-value, tau and calibrated score of an observed `score` against its `null` values
    (docs/protocol.md section 5; see the module docstring)."""
    alpha = _check_alpha(alpha)
    null = np.asarray(null, dtype=np.float64).reshape(-1)
    n_perm = null.size
    if n_perm < 1:
        raise ValueError("the null needs at least one value")
    combined = np.sort(np.concatenate([[score], null]))  # NaN sorts last
    # the same float expression as the reference package, so K and alpha pick the same index
    position = min(max(int(math.ceil((1.0 - alpha) * (n_perm + 1))) - 1, 0), n_perm)
    tau = float(combined[position])
    if math.isnan(score):
        return Calibrated(score, math.nan, math.nan, tau, s_max, n_perm, k)
    p_value = (1.0 + float(np.count_nonzero(null >= score))) / (n_perm + 1)
    calibrated = (score - tau) / max(s_max - tau, _CALIBRATION_EPS)
    calibrated = min(max(calibrated, 0.0), 1.0) if not math.isnan(calibrated) else math.nan
    return Calibrated(score, calibrated, p_value, tau, s_max, n_perm, k)


# ---- input checks ---------------------------------------------------------------------------
def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return float(alpha)


def _check_count(n_permutations) -> int:
    if (isinstance(n_permutations, bool) or not isinstance(n_permutations, (int, np.integer))
            or n_permutations < 1):
        raise ValueError("the number of permutations must be a positive integer, "
                         f"got {n_permutations!r}")
    return int(n_permutations)


def _check_topks(topk) -> tuple[list[int], bool]:
    """(sorted distinct k values, whether several were asked for: then keys carry @k)."""
    if isinstance(topk, (int, np.integer)) and not isinstance(topk, bool):
        return [M._check_topk(topk)], False
    if not isinstance(topk, Sequence) or isinstance(topk, str) or not topk:
        raise ValueError(f"topk must be a positive integer or a non-empty list of them, "
                         f"got {topk!r}")
    return sorted({M._check_topk(k) for k in topk}), True


def draw_permutations(n: int, n_permutations: int = 200, seed: int = 0) -> np.ndarray:
    """K x N int64: row k is the k-th rng.permutation(n) of numpy's default_rng(seed)."""
    n_permutations = _check_count(n_permutations)
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(n_permutations)]).astype(np.int64)


def _check_permutations(permutations, n: int) -> torch.Tensor:
    """A K x N int64 CPU tensor whose rows are permutations of range(N)."""
    if isinstance(permutations, torch.Tensor):
        perms = permutations.detach().cpu()
        integer = not (perms.is_floating_point() or perms.is_complex()
                       or perms.dtype == torch.bool)
    else:
        arr = np.asarray(permutations)
        integer = arr.dtype.kind in "iu"
        perms = torch.from_numpy(arr.astype(np.int64)) if integer else None
    if not integer:
        raise ValueError("permutations must be an integer array (K x N)")
    if perms.ndim != 2 or perms.shape[0] < 1 or perms.shape[1] != n:
        raise ValueError(f"permutations must have shape (K, N) with K >= 1 and N = {n}, "
                         f"got {tuple(perms.shape)}")
    perms = perms.long()
    bad = (torch.sort(perms, dim=1).values != torch.arange(n)).any(dim=1)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"permutations row {row} is not a permutation of range({n})")
    return perms


def _permutations(permutations, n_permutations, seed, n: int) -> torch.Tensor:
    if permutations is None:
        return torch.from_numpy(draw_permutations(n, n_permutations, seed))
    return _check_permutations(permutations, n)


# ---- bit-parallel list comparisons ----------------------------------------------------------
def _bit_masks(in_b: torch.Tensor, q: torch.Tensor, k: int) -> torch.Tensor:
    """k x ... match masks: masks[p] has bit q[..., p] set where in_b[..., p] (item p of the
    first list is item q of the second). int32 while the sums below fit (k <= 29)."""
    dtype = torch.int32 if k <= 29 else torch.long
    return (in_b.to(dtype) << q.to(dtype)).movedim(-1, 0).contiguous()


def _popcount(x: torch.Tensor, bits: int) -> torch.Tensor:
    shifts = torch.arange(bits, device=x.device, dtype=x.dtype)
    return ((x[..., None] >> shifts) & 1).sum(dim=-1)


def _lcs_bits(masks: torch.Tensor, k: int) -> torch.Tensor:
    """LCS length of two k-lists of distinct items (Allison-Dix bit-vector algorithm);
    masks from _bit_masks. v + u < 2^(k+1) fits the masks' integer type."""
    full = (1 << k) - 1
    v = torch.full(masks.shape[1:], full, dtype=masks.dtype, device=masks.device)
    for p in range(k):
        u = v & masks[p]
        v = ((v + u) | (v - u)) & full
    return k - _popcount(v, k)


def _edit_bits(masks: torch.Tensor, k: int) -> torch.Tensor:
    """Levenshtein distance of two k-lists of distinct items (Myers' bit-vector algorithm in
    Hyyro's global form: the table's top row grows by one per column). The second list is
    the pattern (one bit per position), the first the text; masks from _bit_masks."""
    full = (1 << k) - 1
    shape, dtype = masks.shape[1:], masks.dtype
    vp = torch.full(shape, full, dtype=dtype, device=masks.device)
    vn = torch.zeros(shape, dtype=dtype, device=masks.device)
    dist = torch.full(shape, k, dtype=dtype, device=masks.device)
    for p in range(k):
        eq = masks[p]
        d0 = ((((eq & vp) + vp) & full) ^ vp) | eq | vn
        hp = vn | (~(d0 | vp) & full)
        hn = vp & d0
        dist += ((hp >> (k - 1)) & 1) - ((hn >> (k - 1)) & 1)  # the last row's step
        hp = ((hp << 1) | 1) & full
        hn = (hn << 1) & full
        vp = hn | (~(d0 | hp) & full)
        vn = d0 & hp
    return dist


# ---- the null of one pair -------------------------------------------------------------------
class _Null:
    """Observed and null scores of one pair (A, B) for the requested metrics and k values.

    Built from the sides at the largest k; smaller k use the first k of the same lists."""

    def __init__(self, a: M._Side, b: M._Side, names: list[str], ks: list[int]):
        self.names = names
        self.ks = ks
        self.pairs = {k: M._Pair(a.truncated(k) if k < a.topk else a,
                                 b.truncated(k) if k < b.topk else b) for k in ks}
        self.top = self.pairs[max(ks)]
        self.n = a.n
        self.device = a.x.device
        self._lookups = {}  # k -> A's lists as sorted keys (see _a_lookup)
        self._cknna_self = {}  # k -> cknna's two self terms

    def keys(self) -> list[tuple[str, int | None]]:
        return [(name, k) for name in self.names
                for k in (self.ks if name in K_DEPENDENT else [None])]

    def observed(self) -> dict[tuple[str, int | None], float]:
        """The raw scores, computed exactly as score_all computes them."""
        return {(name, k): float(M._FUNCS[name](self.pairs[k] if k else self.top))
                for name, k in self.keys()}

    def null(self, perms: torch.Tensor) -> dict[tuple[str, int | None], np.ndarray]:
        """K null values per key, one per row of `perms` (a K x N CPU tensor)."""
        out = {key: np.empty(perms.shape[0]) for key in self.keys()}
        step = self._chunk()
        for s in range(0, perms.shape[0], step):
            pc = perms[s:s + step].to(self.device)
            for key, values in self._chunk_values(pc).items():
                out[key][s:s + pc.shape[0]] = values
        return out

    def _chunk(self) -> int:
        """Permutations per chunk: the temporaries of one must fit the metrics' budget."""
        # about 16 int64/float64 N x k temporaries in the kNN part; svcca's m x N x 10 gather
        per_perm = 8 * self.n * (16 * max(self.ks) + M.SVCCA_DIMS)
        return max(1, M._budget(self.device) // per_perm)

    def _chunk_values(self, pc: torch.Tensor) -> dict:
        out = {}
        if any(name in K_DEPENDENT for name in self.names):
            ibp, vbp = self._relabelled(pc)
            for k in self.ks:
                out.update(self._knn_values(k, ibp[..., :k].contiguous(),
                                            vbp[..., :k].contiguous()))
        if "cka" in self.names or "unbiased_cka" in self.names:
            out.update(self._cka_values(pc))
        if "svcca" in self.names:
            out[("svcca", None)] = self._svcca_values(pc)
        return out

    # -- kNN-based metrics --
    def _relabelled(self, pc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B[pi]'s neighbour lists (m x N x k) and values: row i is B's row pi(i), relabelled."""
        ib, vb = self.top.b.knn
        m, n = pc.shape
        inverse = torch.empty_like(pc)
        inverse.scatter_(1, pc, torch.arange(n, device=pc.device).expand(m, n))
        ibp = torch.gather(inverse, 1, ib[pc].reshape(m, -1)).view(m, n, -1)
        return ibp, vb[pc]

    def _a_lookup(self, k: int):
        """A's lists at k as sorted keys j * N + i (i a neighbour of j), with the flat
        position j * k + q of each key: membership and reverse-edge lookups."""
        cache = self._lookups
        if k not in cache:
            ia = self.pairs[k].a.knn[0]
            rows = torch.arange(self.n, device=ia.device)[:, None]
            keys, order = torch.sort((rows * self.n + ia).reshape(-1))
            # for cknna: where A's pattern holds the transposed entry (j, i) of each (i, j)
            rev, hit = self._find(keys, order, ia * self.n + rows)
            cache[k] = (keys, order, rev, hit)
        return cache[k]

    @staticmethod
    def _find(keys: torch.Tensor, order: torch.Tensor, query: torch.Tensor):
        pos = torch.searchsorted(keys, query.reshape(-1)).clamp_(max=keys.numel() - 1)
        hit = (keys[pos] == query.reshape(-1)).view(query.shape)
        return order[pos].view(query.shape), hit

    def _knn_values(self, k: int, ibp: torch.Tensor, vbp: torch.Tensor) -> dict:
        pair = self.pairs[k]
        ia, va = pair.a.knn
        m, n = ibp.shape[:2]
        # match each A-neighbour (i, p) against row i of B[pi]'s list: sort + binary search
        sorted_b, order = torch.sort(ibp, dim=-1)
        pos = torch.searchsorted(sorted_b, ia.expand(m, n, k).contiguous()).clamp_(max=k - 1)
        in_b = sorted_b.gather(-1, pos) == ia
        q = order.gather(-1, pos)  # the position in B's list of the match
        out = {}
        if "mutual_knn" in self.names:
            counts = in_b.sum(dim=-1)
            out[("mutual_knn", k)] = [float(c.double().mean()) / k for c in counts]
        if "cycle_knn" in self.names:
            # is i among the A-neighbours of its p-th B-neighbour j: is j * N + i a key
            keys, order = self._a_lookup(k)[:2]
            query = ibp * n + torch.arange(n, device=ibp.device)[:, None]
            back = self._find(keys, order, query)[1].any(dim=-1)
            out[("cycle_knn", k)] = [float(r.double().mean()) for r in back]
        if "lcs_knn" in self.names or "edit_distance_knn" in self.names:
            out.update(self._list_values(k, ia, ibp, in_b, q))
        if "cknna" in self.names:
            out[("cknna", k)] = self._cknna_values(k, va, vbp.gather(-1, q) * in_b, in_b)
        return out

    def _list_values(self, k, ia, ibp, in_b, q) -> dict:
        m, n = ibp.shape[:2]
        out = {}
        if k <= _BIT_PARALLEL_MAX_K:
            masks = _bit_masks(in_b, q, k)
            lcs = _lcs_bits(masks, k) if "lcs_knn" in self.names else None
            edit = _edit_bits(masks, k) if "edit_distance_knn" in self.names else None
        else:
            x, y = ia.expand(m, n, k).reshape(-1, k), ibp.reshape(-1, k)
            lcs = M._lcs_lengths(x, y).view(m, n) if "lcs_knn" in self.names else None
            edit = M._levenshtein(x, y).view(m, n) if "edit_distance_knn" in self.names else None
        if lcs is not None:
            out[("lcs_knn", k)] = [float(r.double().mean()) for r in lcs]
        if edit is not None:
            out[("edit_distance_knn", k)] = [1.0 - float(r.double().mean()) / k for r in edit]
        return out

    def _cknna_values(self, k: int, va, l_at_a, in_b) -> list[float]:
        pair = self.pairs[k]
        ia = pair.a.knn[0]
        ib, vb = pair.b.knn
        cache = self._cknna_self
        if k not in cache:  # the self terms do not change under a permutation of B
            cache[k] = (M._hsic_unbiased_lists(ia, va, va), M._hsic_unbiased_lists(ib, vb, vb))
        kk, ll = cache[k]
        _, _, rev, hit = self._a_lookup(k)
        kl = _hsic_lists_batched(ia, rev, hit, va * in_b, l_at_a)
        return [M._guarded_ratio(float(v), kk, ll) for v in kl]

    # -- cka, unbiased cka --
    @cached_property
    def _use_kernels(self) -> bool:
        """<K_c, P L_c P^T> (O(N^2) per permutation) instead of ||A_c^T P B_c||_F^2
        (O(N D_a D_b)) when that is much cheaper and both kernels fit the budget."""
        n = self.n
        # a gathered kernel entry costs about as much as 500-1000 multiply-adds of a GEMM
        return n * 1024 <= self.top.a.d * self.top.b.d and 16 * n * n <= M._budget(self.device)

    @cached_property
    def _cross_pieces(self) -> tuple[torch.Tensor, torch.Tensor]:
        ac, bc = self.top.a.centred, self.top.b.centred
        if self._use_kernels:
            return ac @ ac.T, bc @ bc.T
        return ac.T.float().contiguous(), bc.float()

    def _cross_frob(self, pc: torch.Tensor) -> list[float]:
        """||A_c^T P B_c||_F^2 for each permutation in the chunk."""
        first, second = self._cross_pieces
        if self._use_kernels:  # (P L P^T)_ij = L[p_i, p_j], gathered from the flat kernel
            flat, n = second.reshape(-1), self.n
            return [float((first * flat[p[:, None] * n + p[None, :]]).sum()) for p in pc]
        if len(pc) * second.numel() * 4 <= _BATCH_BYTES:  # small: one batched product
            prod = torch.matmul(first, second[pc])
            return prod.double().square().sum(dim=(1, 2)).tolist()
        # one permutation at a time into reused buffers: each product is a full-size GEMM
        rows = torch.empty_like(second)
        prod = first.new_empty((first.shape[0], second.shape[1]))
        out = []
        for p in pc:
            torch.matmul(first, torch.index_select(second, 0, p, out=rows), out=prod)
            out.append(float(torch.linalg.vector_norm(prod, dtype=torch.float64)) ** 2)
        return out

    def _cka_values(self, pc: torch.Tensor) -> dict:
        pair = self.top
        frobs = self._cross_frob(pc)
        out = {}
        if "cka" in self.names:
            out[("cka", None)] = [M._guarded_ratio(f, pair.a.self_frob, pair.b.self_frob)
                                  for f in frobs]
        if "unbiased_cka" in self.names:
            out[("unbiased_cka", None)] = self._unbiased_values(pc, frobs)
        return out

    def _unbiased_values(self, pc: torch.Tensor, frobs: list[float]) -> list[float]:
        """metrics._Pair.hsic_unbiased with dB permuted (its other sums do not change)."""
        pair, n = self.top, self.n
        da, db = pair.a.sq_norms, pair.b.sq_norms
        haa = pair.hsic_unbiased(pair.a.self_frob, da, da)
        hbb = pair.hsic_unbiased(pair.b.self_frob, db, db)
        sums = float(da.sum()) * float(db.sum()) / ((n - 1) * (n - 2))
        dds = (da * db[pc]).sum(dim=1).tolist()
        return [M._guarded_ratio((f - dd + sums - 2.0 * dd / (n - 2)) / (n * (n - 3)), haa, hbb)
                for f, dd in zip(frobs, dds, strict=True)]

    # -- svcca --
    def _svcca_values(self, pc: torch.Tensor) -> list[float]:
        ua, ub = self.top.a.svcca_basis, self.top.b.svcca_basis
        if ua.shape[1] == 0 or ub.shape[1] == 0:
            return [math.nan] * pc.shape[0]
        # the canonical correlations of ua and ub[pi] (as metrics._canonical_correlations)
        lu = torch.linalg.cholesky(ua.T @ ua)
        lv = torch.linalg.cholesky(ub.T @ ub)
        cross = torch.matmul(ua.T, ub[pc])  # m x r_a x r_b
        w = torch.linalg.solve_triangular(lu, cross, upper=False)
        w = torch.linalg.solve_triangular(lv, w.transpose(1, 2), upper=False).transpose(1, 2)
        return torch.linalg.svdvals(w).mean(dim=1).tolist()


def _hsic_lists_batched(cols, rev, hit, kv, lv) -> torch.Tensor:
    """metrics._hsic_unbiased_lists for m value sets (kv, lv: m x N x k) on one pattern
    `cols` (N x k); lv at the transposed entry of (i, cols[i, p]) is lv.flat[rev[i, p]]
    where hit[i, p] (else 0)."""
    n = cols.shape[0]
    lv_t = lv.flatten(1)[:, rev] * hit
    trace_kl = (kv * lv_t).sum(dim=(1, 2))
    sums = kv.sum(dim=(1, 2)) * lv.sum(dim=(1, 2)) / ((n - 1) * (n - 2))
    cross = (kv * lv.sum(dim=2)[:, cols]).sum(dim=(1, 2))
    return (trace_kl + sums - 2.0 * cross / (n - 2)) / (n * (n - 3))


# ---- public entry points --------------------------------------------------------------------
def _key(name: str, k: int | None, several: bool) -> str:
    return f"{name}@{k}" if several and k is not None else name


def calibrate_all(a, b, *, permutations=None, n_permutations: int = 200, seed: int = 0,
                  alpha: float = 0.05, metrics: Sequence[str] = METRICS, topk=10,
                  return_null: bool = False, block_rows: int | None = None):
    """Calibrate each metric of prepared features a, b (N x D_a, N x D_b) against K row
    permutations of b (docs/protocol.md section 5; the module docstring has the numbers and costs).

    `permutations` (int, K x N, each row a permutation of range(N), applied to b's rows)
    overrides the draw of `n_permutations` from `seed`. `topk` is one k or a list of k: the
    k-dependent metrics (the four kNN metrics and cknna) are then scored and calibrated at
    every k from one neighbour search at the largest, under the keys "name@k"; with one int
    the keys are the metric names. Returns {key: Calibrated}, and with return_null=True also
    {key: the K null values (numpy float64)}."""
    names = M._check_metrics(metrics)
    ks, several = _check_topks(topk)
    alpha = _check_alpha(alpha)
    block_rows = M._check_block_rows(block_rows)
    a, b = M._check_pair(a, b, max(ks), names)
    perms = _permutations(permutations, n_permutations, seed, a.shape[0])
    engine = _Null(M._Side(a, max(ks), block_rows), M._Side(b, max(ks), block_rows), names, ks)
    observed = engine.observed()
    nulls = engine.null(perms)
    results, null_out = {}, {}
    for (name, k), value in observed.items():
        key = _key(name, k, several)
        s_max = metric_s_max(name, k if k else max(ks))
        results[key] = calibrate_values(value, nulls[(name, k)], alpha=alpha, s_max=s_max, k=k)
        null_out[key] = nulls[(name, k)]
    return (results, null_out) if return_null else results


def _layer_sides(layers, what: str, topk: int, block_rows):
    if isinstance(layers, (np.ndarray, torch.Tensor)) or not isinstance(layers, Sequence):
        layers = []
    if not layers:
        raise ValueError(f"{what} must be a non-empty list of feature matrices")
    return [M._Side(M._as_matrix(x, f"{what}[{i}]"), topk, block_rows)
            for i, x in enumerate(layers)]


def _layer_engines(a_layers, b_layers, metric: str, topk, block_rows) -> list[list[_Null]]:
    names = M._check_metrics([metric])
    topk = M._check_topk(topk)
    block_rows = M._check_block_rows(block_rows)
    sides_a = _layer_sides(a_layers, "a_layers", topk, block_rows)
    sides_b = _layer_sides(b_layers, "b_layers", topk, block_rows)
    for side in sides_a + sides_b:  # every layer pair must pass score_all's checks
        M._check_pair(sides_a[0].x, side.x, topk, names)
    # one side object per layer: each layer's neighbours and kernel pieces are computed once
    return [[_Null(sa, sb, names, [topk]) for sb in sides_b] for sa in sides_a]


def score_layers(a_layers, b_layers, metric: str, *, topk: int = 10,
                 block_rows: int | None = None) -> np.ndarray:
    """The L_A x L_B matrix of one metric between every layer of A and every layer of B
    (prepared features, all with the same N); each layer's pieces are computed once."""
    engines = _layer_engines(a_layers, b_layers, metric, topk, block_rows)
    return np.array([[next(iter(e.observed().values())) for e in row] for row in engines])


def calibrate_layers(a_layers, b_layers, metric: str, *, agg: str = "max", permutations=None,
                     n_permutations: int = 200, seed: int = 0, alpha: float = 0.05,
                     topk: int = 10, return_null: bool = False,
                     block_rows: int | None = None):
    """Calibrate the max (or mean) over the L_A x L_B layer-pair matrix of one metric against
    the same statistic under K permutations, each applied to the rows of EVERY layer of B
    (docs/protocol.md section 5, Algorithm 2): calibrating each pair and then taking the max would
    inflate false positives. Returns a Calibrated (and, with return_null=True, the K null
    values of the aggregate)."""
    if agg not in ("max", "mean"):
        raise ValueError(f"agg must be 'max' or 'mean', got {agg!r}")
    alpha = _check_alpha(alpha)
    engines = _layer_engines(a_layers, b_layers, metric, topk, block_rows)
    perms = _permutations(permutations, n_permutations, seed, engines[0][0].n)
    key = (metric, topk if metric in K_DEPENDENT else None)
    observed = np.array([[e.observed()[key] for e in row] for row in engines])
    nulls = np.array([[e.null(perms)[key] for e in row] for row in engines])  # L_A x L_B x K
    reduce = np.max if agg == "max" else np.mean
    null = reduce(nulls, axis=(0, 1))
    result = calibrate_values(float(reduce(observed)), null, alpha=alpha,
                              s_max=metric_s_max(metric, topk),
                              k=topk if metric in K_DEPENDENT else None)
    return (result, null) if return_null else result


# ---- command line -------------------------------------------------------------------------
def format_table(results: dict[str, Calibrated], nulls: dict[str, np.ndarray]) -> str:
    """One line per key: metric, k, raw, null mean, tau, calibrated, p."""
    header = ("metric", "k", "raw", "null mean", "tau", "calibrated", "p")
    rows = []
    for key, r in results.items():
        name = key.split("@")[0]
        rows.append((name, "-" if r.k is None else str(r.k), f"{r.score:.6f}",
                     f"{float(np.mean(nulls[key])):.6f}", f"{r.tau:.6f}", f"{r.calibrated:.6f}",
                     f"{r.p_value:.4f}"))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in [header, *rows]]
    return "\n".join(lines)


def cli_calibrate(args, a, b, names: list[str], topks: list[int]) -> int:
    """`reprsim similarity --calibrate`: the table of calibrate_all on the two files."""
    _check_count(args.permutations)  # fail before the (slow) work
    _check_alpha(args.alpha)
    if not args.no_prepare:
        a, b = M.prepare(a), M.prepare(b)
    topk = topks if len(topks) > 1 else topks[0]
    results, nulls = calibrate_all(a, b, n_permutations=args.permutations, seed=args.seed,
                                   alpha=args.alpha, metrics=names, topk=topk, return_null=True)
    print(f"# {args.permutations} permutations of b's rows (seed {args.seed}), alpha {args.alpha}, "
          f"N {a.shape[0]}; p = (1 + #null >= raw) / (K + 1)")
    print(format_table(results, nulls), flush=True)
    return 0
