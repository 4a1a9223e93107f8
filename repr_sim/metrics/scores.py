"""The eight representational-similarity metrics (docs/protocol.md section 3), exact and fast.

Public API
    METRICS                                   the eight names, in the study's order
    prepare(x, q=0.95)                        clamp at the q-quantile of |x|, L2-normalise rows
    score(metric, a, b, *, topk=10)           one metric -> float
    score_all(a, b, *, metrics=METRICS, topk=10) -> {metric: float}
    calibrate_all, calibrate_layers, score_layers, Calibrated, ...
                                              null calibration (docs/protocol.md section 5), from
                                              repr_sim.metrics.calibration

Inputs are numpy arrays or torch tensors (N x D, float32 or float64; float16/bfloat16 are
upcast to float32), on CPU or CUDA; the work happens on the device the input lives on. A and
B may have different D but must have the same N.

Definitions and choices (everything below is exact; nothing is randomised):

* Neighbours. kNN(i) are the k points j != i with the largest inner products x_i . x_j,
  most similar first. The ranking uses float64 inner products; equal float64 values are
  ordered by ascending index j, so the lists are deterministic and do not depend on the
  tile size, the device or the input's dtype. For speed the candidates are screened with
  float32 products (the k + 4 best per row), re-scored in float64, and each row is checked
  against a rigorous bound on the float32 rounding error; rows where the bound cannot rule
  out a point outside the candidates (exact ties, near-ties, duplicates) are recomputed
  from a float64 product over all points. (So inputs where one point has a huge number of
  exact ties, e.g. thousands of identical rows, are correct but slow.)
* Kernels. K = A A^T and L = B B^T are never formed whole (beyond one tile). The neighbour
  screening walks K in square float32 tiles (2048 rows on CPU, 8192 on CUDA, smaller if
  memory is short; one tile when N is below that), only those on and above the diagonal
  since K is symmetric. `block_rows=` forces the tile side and every row-chunk size
  (block_rows >= N is the unblocked path; the tests compare the two). The kNN metrics and
  cknna then need only the N x k neighbour lists and the kernel values there; CKA and
  unbiased CKA use feature-space identities on the centred features A_c, B_c:
      biased HSIC   trace(K H L H) = ||A_c^T B_c||_F^2            (H = I - 11^T/N)
      unbiased HSIC (Song et al. 2012, eq. 5) is unchanged by centring the features, and with
      centred features its three terms are  tr(K~L~) = ||A_c^T B_c||_F^2 - dA.dB,
      1^T K~ 1 = -sum(dA),  1^T K~ L~ 1 = dA.dB,  where dA_i = ||a_c,i||^2.
  When D is larger than N the same Frobenius products are summed from N x N kernel row
  chunks instead. Every temporary is bounded (~512 MiB, less when memory is short).
* cknna. The masks M_K (each row's k neighbours in A), M_L and M = M_K * M_L are not
  symmetric, so its unbiased HSIC keeps sum(K~ * L~^T) and colsum(K~) . rowsum(L~); both
  are computed from the N x k neighbour lists.
* The 1e-6 guard is added to the square root in the denominators of cka, unbiased_cka and
  cknna, as in the study. Values are reported as computed: negative values stay negative; a
  negative product under the square root (possible for the unbiased estimators on tiny or
  degenerate inputs) gives NaN.
* svcca. Columns standardised with the mean and the sample std (ddof=1, as torch.std) +
  1e-8, giving Z; the top r = min(10, rank) left singular vectors of each side; the mean of
  the min(r_a, r_b) canonical correlations between the two, which are the singular values of
  Q_a^T Q_b for orthonormal (and, like Z, centred) bases Q of the two subspaces. The
  singular vectors are exact, not randomised: U = Z V S^-1 from the float64 symmetric
  eigendecomposition Z^T Z = V S^2 V^T (D x D, reusing the centred Gram that CKA needs; Z Z^T
  when D > N). Directions with s^2 <= s_max^2 max(N, D) eps count as zero (a Gram cannot
  resolve them, and they would be arbitrary).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

log = logging.getLogger(__name__)

__all__ = ["METRICS", "GUARD", "SVCCA_DIMS", "prepare", "neighbours", "score_all", "score",
           "load_features"]

METRICS = (
    "cycle_knn",
    "mutual_knn",
    "lcs_knn",
    "cka",
    "unbiased_cka",
    "cknna",
    "svcca",
    "edit_distance_knn",
)

GUARD = 1e-6  # the study's guard, added to the square root in the CKA-type denominators
SVCCA_DIMS = 10
_MARGIN = 4  # extra float32 candidates per row before the exact float64 re-ranking
_BUDGET_MAX = 512 * 2**20  # the most one temporary may take
_TILE_CPU = 2048  # kernel tile side: large enough for full matmul speed, small in memory
_TILE_CUDA = 8192
_GATHER_BYTES = 64 * 2**20  # rows gathered at once when re-scoring candidates in float64
_U32 = 2.0**-24
_U64 = 2.0**-53
_TINY32 = 2.0**-149  # float32's smallest subnormal: bounds the error of underflowed terms


# ---- input handling -----------------------------------------------------------------------
def _as_matrix(x, name: str) -> torch.Tensor:
    """A validated 2-D float32/float64 torch view of `x` (no copy for contiguous input)."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f":
            raise ValueError(f"{name} must be floating point (float32 or float64), got dtype {x.dtype}")
        if x.dtype.itemsize > 8:  # long double: torch has no such type
            x = x.astype(np.float64)
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        t = x.detach()
        if not t.is_floating_point():
            raise ValueError(f"{name} must be floating point (float32 or float64), got dtype {t.dtype}")
    else:
        raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N x D), got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(t.shape)}")
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t


def _check_metrics(metrics) -> list[str]:
    if isinstance(metrics, str):
        metrics = [metrics]
    names = list(dict.fromkeys(metrics))  # keep the caller's order, drop repeats
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(map(repr, unknown))}; known: {', '.join(METRICS)}")
    if not names:
        raise ValueError("no metric requested")
    return names


def _check_topk(topk) -> int:
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
        raise ValueError(f"topk must be a positive integer, got {topk!r}")
    return int(topk)


# ---- prepare ------------------------------------------------------------------------------
def prepare(x, q: float = 0.95):
    """Clamp every entry to +-t, t = the q-quantile of |x| over the whole matrix, then
    L2-normalise each row. numpy in -> numpy out; torch in -> torch out on the same device.

    The quantile is an exact order statistic, without interpolation: the element at 0-based
    position int(q * n) of |x| sorted ascending (n = N * D entries; the last one for q = 1),
    i.e. the (floor(q n) + 1)-th smallest. Why this one: the protocol (docs/protocol.md
    section 3) asks for an exact order statistic (an entry of |x|, not an interpolated
    value), and `sorted[int(q * n)]` is the
    exact-mode convention of the Platonic-representation code the study's metrics come from.
    (numpy's method="inverted_cdf" would take position ceil(q n) - 1; the two differ only
    when q n is an integer, by one position.) Row norms are computed in float64; a zero row
    stays zero (norm floored at 1e-12). The output keeps the input dtype (float32 for
    float16/bfloat16 input).
    """
    if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0.0 < q <= 1.0:
        raise ValueError(f"q must be in (0, 1], got {q!r}")
    is_numpy = isinstance(x, np.ndarray)
    t = _as_matrix(x, "features")
    flat = t.abs().reshape(-1)
    position = min(int(q * flat.numel()), flat.numel() - 1)
    thresh = torch.kthvalue(flat, position + 1).values  # kthvalue is 1-based
    clamped = t.clamp(-thresh, thresh).double()
    norms = torch.linalg.vector_norm(clamped, dim=1, keepdim=True).clamp_min(1e-12)
    out = (clamped / norms).to(t.dtype)
    return out.cpu().numpy() if is_numpy else out


# ---- memory budget and tiles --------------------------------------------------------------
def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def _budget(device: torch.device) -> int:
    """Bytes one temporary (a kernel tile, a float64 row chunk) may take."""
    return int(min(_BUDGET_MAX, max(32 * 2**20, _available_bytes(device) // 16)))


def _check_block_rows(block_rows) -> int | None:
    if block_rows is None:
        return None
    if isinstance(block_rows, bool) or not isinstance(block_rows, (int, np.integer)) or block_rows < 1:
        raise ValueError(f"block_rows must be a positive integer, got {block_rows!r}")
    return int(block_rows)


def _tile_size(n: int, device: torch.device, block_rows: int | None) -> int:
    """Side of the square kernel tiles (a few float32 tiles are alive at once)."""
    if block_rows is not None:
        return min(n, block_rows)
    preferred = _TILE_CUDA if device.type == "cuda" else _TILE_CPU
    fits = int(math.isqrt(_budget(device) // (4 * 4)))
    return max(1, min(n, preferred, fits))


def _rows_fitting(row_bytes: int, device: torch.device, block_rows: int | None) -> int:
    """Rows of a temporary that fit the budget (at most block_rows, when forced)."""
    fits = max(1, _budget(device) // max(1, row_bytes))
    return fits if block_rows is None else min(fits, block_rows)


def _progress(iterable, total: int, desc: str):
    if total < 8:
        return iterable
    from ..paths import progress

    return progress(iterable, total=total, desc=desc, leave=False)


# ---- exact neighbours ---------------------------------------------------------------------
def _dots64(x64: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
            block_rows: int | None = None) -> torch.Tensor:
    """float64 x[rows[r]] . x[cols[r, c]] (rows: R, cols: R x C) by one batched product.

    Every ranking value comes from this one routine, so equal rows give equal values (the
    tie rule relies on it). Rows are gathered in chunks into one reused buffer (fresh large
    buffers cost page faults that can exceed the arithmetic)."""
    n_rows, n_cols = cols.shape
    d = x64.shape[1]
    out = torch.empty((n_rows, n_cols), dtype=torch.float64, device=x64.device)
    step = min(n_rows, max(1, _GATHER_BYTES // max(1, n_cols * d * 8)), block_rows or n_rows)
    buf = torch.empty((step * n_cols, d), dtype=torch.float64, device=x64.device)
    for s in range(0, n_rows, step):
        c = cols[s:s + step]
        gathered = torch.index_select(x64, 0, c.reshape(-1), out=buf[:c.numel()])
        out[s:s + step] = torch.bmm(gathered.view(c.shape[0], n_cols, d), x64[rows[s:s + step], :, None])[..., 0]
    return out


def _order_rows(cand: torch.Tensor, vals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by value descending, ties by ascending index (two stable sorts)."""
    cand, order = torch.sort(cand, dim=1)
    vals = vals.gather(1, order)
    neg, order = torch.sort(-vals, dim=1, stable=True)
    return cand.gather(1, order), -neg


def _screen_precision_ok(device: torch.device) -> bool:
    """float32 screening needs true float32 products (no TF32/bf16) for its error bound."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    return not (device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32)


def _merge_top(best_v, best_i, lo, hi, tile, offset, m):
    """Fold a tile's columns (global index offset + c) into rows lo:hi's running top m."""
    v, i = torch.topk(tile, min(m, tile.shape[1]), dim=1)
    v = torch.cat([best_v[lo:hi], v], dim=1)
    i = torch.cat([best_i[lo:hi], i + offset], dim=1)
    v, pos = torch.topk(v, m, dim=1)
    best_v[lo:hi], best_i[lo:hi] = v, i.gather(1, pos)


def _screen(x32: torch.Tensor, m: int, tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's m largest float32 inner products with the other rows (values descending).

    K is symmetric, so only tiles on and above the diagonal are computed; each serves its
    rows directly and its columns through the transpose. The two tile buffers are reused."""
    n = x32.shape[0]
    device = x32.device
    best_v = torch.full((n, m), -math.inf, dtype=torch.float32, device=device)
    best_i = torch.zeros((n, m), dtype=torch.long, device=device)
    buf = torch.empty(tile * tile, dtype=torch.float32, device=device)
    buf_t = torch.empty(tile * tile, dtype=torch.float32, device=device)
    starts = list(range(0, n, tile))
    for a, lo in enumerate(_progress(starts, len(starts), "neighbours")):
        hi = min(n, lo + tile)
        for lo2 in starts[a:]:
            hi2 = min(n, lo2 + tile)
            t = torch.matmul(x32[lo:hi], x32[lo2:hi2].T, out=buf[:(hi - lo) * (hi2 - lo2)].view(hi - lo, hi2 - lo2))
            if lo2 == lo:
                t.fill_diagonal_(-math.inf)  # a point is not its own neighbour
                _merge_top(best_v, best_i, lo, hi, t, lo, m)
            else:
                _merge_top(best_v, best_i, lo, hi, t, lo2, m)
                t_t = buf_t[:t.numel()].view(hi2 - lo2, hi - lo).copy_(t.T)
                _merge_top(best_v, best_i, lo2, hi2, t_t, lo, m)
    return best_v, best_i


def _exact_rows(x64: torch.Tensor, rows: torch.Tensor, k: int, norms: torch.Tensor,
                block_rows: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbours of `rows` from a float64 product over all points (the careful path)."""
    n, d = x64.shape
    device = x64.device
    maxnorm = float(norms.max())
    out_idx = torch.empty((rows.numel(), k), dtype=torch.long, device=device)
    out_val = torch.empty((rows.numel(), k), dtype=torch.float64, device=device)
    step = _rows_fitting(8 * n, device, block_rows)
    for s in range(0, rows.numel(), step):
        r = rows[s:s + step]
        local = torch.arange(r.numel(), device=device)
        s64 = x64[r] @ x64.T
        s64[local, r] = -math.inf
        kth = torch.topk(s64, k, dim=1).values[:, -1]
        # this product and _dots64 each err by at most delta: keep every j _dots64 may rank in
        delta = 2.0 * (d + 4) * _U64 * norms[r] * maxnorm
        keep = s64 >= (kth - 2.0 * delta)[:, None]
        keep[local, r] = False
        del s64
        pr, pc = keep.nonzero(as_tuple=True)  # row-major: columns ascend within a row
        counts = torch.bincount(pr, minlength=r.numel())
        slot = torch.arange(pr.numel(), device=device) - (torch.cumsum(counts, 0) - counts)[pr]
        cand = r[:, None].repeat(1, int(counts.max()))  # padding: the row itself, dropped below
        cand[pr, slot] = pc
        vals = _dots64(x64, r, cand, block_rows)
        vals[cand == r[:, None]] = -math.inf
        cand, vals = _order_rows(cand, vals)
        out_idx[s:s + step], out_val[s:s + step] = cand[:, :k], vals[:, :k]
    return out_idx, out_val


def neighbours(x: torch.Tensor, k: int, *, block_rows: int | None = None,
               margin: int = _MARGIN) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, values): each row's k nearest points by inner product (self excluded), most
    similar first, ties by ascending index; values are the float64 inner products. N x k.

    `block_rows` sets the kernel tile side; `margin` the extra float32 candidates per row."""
    n, d = x.shape
    block_rows = _check_block_rows(block_rows)
    if not 1 <= k <= n - 1:
        raise ValueError(f"need 1 <= k <= N - 1, got k={k}, N={n}")
    device = x.device
    x64 = x.double()
    norms = torch.linalg.vector_norm(x64, dim=1)
    everyone = torch.arange(n, device=device)
    if not _screen_precision_ok(device):
        return _exact_rows(x64, everyone, k, norms, block_rows)
    m = min(n - 1, k + margin)
    # Scale by a power of two (exact) so float32 neither overflows nor underflows much.
    maxabs = float(x64.abs().max())
    scale = 2.0 ** -math.frexp(maxabs)[1] if maxabs > 0 else 1.0
    x32 = x if x.dtype == torch.float32 and scale == 1.0 else (x64 * scale).float()
    v32, cand = _screen(x32, m, _tile_size(n, device, block_rows))
    cand, exact = _order_rows(cand, _dots64(x64, everyone, cand, block_rows))
    idx, val = cand[:, :k].contiguous(), exact[:, :k].contiguous()
    if m < n - 1:
        # A point outside the candidates has float32 value <= v32[:, -1]; its exact value
        # exceeds that by at most (D + 2) u32 |x_i||x_j| (plus underflow terms), and the
        # float64 re-scoring errs by (D + 4) u64 |x_i||x_j|; the bound doubles both.
        maxnorm = float(norms.max())
        rel = 2.0 * (d + 4) * (_U32 + _U64)
        absolute = 4.0 * d * _TINY32 * (1.0 + maxnorm * scale) / scale**2
        bound = v32[:, -1].double() / scale**2 + rel * norms * maxnorm + absolute
        redo = everyone[~(exact[:, k - 1] > bound)]
        if redo.numel():
            log.debug("neighbours: %d of %d rows re-ranked from a float64 product", redo.numel(), n)
            idx[redo], val[redo] = _exact_rows(x64, redo, k, norms, block_rows)
    return idx, val


# ---- pieces shared between metrics -------------------------------------------------------
def _kernel_dot(x: torch.Tensor, y: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                block_rows: int | None) -> float:
    """sum((x u^T) * (y v^T)) over row chunks, never holding the N x N products whole;
    (a_c, b_c, a_c, b_c) gives <K_c, L_c>_F."""
    n = x.shape[0]
    step = _rows_fitting(16 * n, x.device, block_rows)
    return sum(float(((x[s:s + step] @ u.T) * (y[s:s + step] @ v.T)).sum()) for s in range(0, n, step))


def _eigh(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric eigendecomposition. On CPU a few-hundred-row problem runs single-threaded:
    MKL's threaded solver is slower there, and many times slower when cores are shared."""
    if g.device.type != "cpu" or g.shape[0] > 2048 or torch.get_num_threads() == 1:
        return torch.linalg.eigh(g)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(g)
    finally:
        torch.set_num_threads(threads)


class _Side:
    """One feature matrix and what the metrics derive from it, each computed once."""

    def __init__(self, x: torch.Tensor, topk: int, block_rows: int | None):
        self.x = x
        self.n, self.d = x.shape
        self.topk = topk
        self.block_rows = block_rows

    @cached_property
    def knn(self) -> tuple[torch.Tensor, torch.Tensor]:
        return neighbours(self.x, self.topk, block_rows=self.block_rows)

    @cached_property
    def centred(self) -> torch.Tensor:
        x64 = self.x.double()
        return x64 - x64.mean(dim=0, keepdim=True)

    @property
    def feature_space(self) -> bool:
        """D x D matrices are no larger than N x N ones."""
        return self.d <= self.n

    @cached_property
    def gram(self) -> torch.Tensor:  # A_c^T A_c, D x D (only when feature_space)
        return self.centred.T @ self.centred

    @cached_property
    def sq_norms(self) -> torch.Tensor:  # dA_i = ||a_c,i||^2 (the diagonal of the centred kernel)
        return (self.centred**2).sum(dim=1)

    @cached_property
    def self_frob(self) -> float:  # ||A_c^T A_c||_F^2 = trace(K H K H)
        if self.feature_space:
            return float(self.gram.square().sum())
        c = self.centred
        return _kernel_dot(c, c, c, c, self.block_rows)

    @cached_property
    def svcca_basis(self) -> torch.Tensor:
        """The top r = min(10, rank) left singular directions of Z, the column-standardised
        features (ddof=1 std + 1e-8), as an N x r basis (Z V, i.e. U S).

        Exact and deterministic: V from the symmetric eigendecomposition Z^T Z = V S^2 V^T
        (D x D, float64; Z Z^T = U S^2 U^T when D > N). Only directions whose squared
        singular value exceeds s_max^2 max(N, D) eps count (below that the Gram cannot
        resolve them). The scale of the columns does not matter: canonical correlations
        depend only on the spanned subspace."""
        n, c = self.n, self.centred
        if self.feature_space:
            sd = torch.sqrt(torch.diagonal(self.gram) / (n - 1)) + 1e-8
            w, v = _eigh(self.gram / (sd[:, None] * sd[None, :]))
        else:
            sd = torch.sqrt((c**2).sum(dim=0) / (n - 1)) + 1e-8
            z = c / sd
            w, v = _eigh(z @ z.T)
        w, v = w.flip(0), v.flip(1)  # descending
        tol = float(w[0]) * max(n, self.d) * torch.finfo(torch.float64).eps
        r = min(SVCCA_DIMS, int((w > tol).sum())) if float(w[0]) > 0 else 0
        return (c / sd) @ v[:, :r] if self.feature_space else v[:, :r]


    def truncated(self, k: int) -> _Side:
        """This side at a smaller k, sharing every piece computed so far. Its neighbour lists
        are the first k of these: the lists a search at k finds (the ranking is exact)."""
        side = _Side(self.x, k, self.block_rows)
        side.__dict__.update({key: value for key, value in self.__dict__.items()
                              if key in _SHARED_PIECES})
        idx, val = self.knn
        side.__dict__["knn"] = (idx[:, :k].contiguous(), val[:, :k].contiguous())
        return side


# the cached pieces of a _Side that do not depend on k
_SHARED_PIECES = ("centred", "gram", "sq_norms", "self_frob", "svcca_basis")


class _Pair:
    """Two sides and the cross terms; each metric reads the cached pieces it needs."""

    def __init__(self, a: _Side, b: _Side):
        self.a = a
        self.b = b
        self.block_rows = a.block_rows
        self.n = a.n
        self.k = a.topk

    @cached_property
    def matches(self) -> tuple[torch.Tensor, torch.Tensor]:
        """For each A-neighbour (i, p): is it also a B-neighbour of i, and L there."""
        ia, _ = self.a.knn
        ib, vb = self.b.knn
        eq = ia[:, :, None] == ib[:, None, :]  # N x k x k
        in_b = eq.any(dim=2)
        l_at_a = (eq * vb[:, None, :]).sum(dim=2)
        return in_b, l_at_a

    @cached_property
    def cross_frob(self) -> float:
        """||A_c^T B_c||_F^2 = trace(K H L H), from D_a x D_b or, if smaller, N x N blocks."""
        ac, bc = self.a.centred, self.b.centred
        if self.a.d * self.b.d <= self.n * (self.a.d + self.b.d):
            return float((ac.T @ bc).square().sum())
        return _kernel_dot(ac, bc, ac, bc, self.block_rows)

    def hsic_unbiased(self, f: float, da: torch.Tensor, db: torch.Tensor) -> float:
        """Eq. 5 from feature-space sums of centred features (see the module docstring)."""
        n = self.n
        dd = float((da * db).sum())
        sums = float(da.sum()) * float(db.sum()) / ((n - 1) * (n - 2))
        return (f - dd + sums - 2.0 * dd / (n - 2)) / (n * (n - 3))


def _guarded_ratio(num: float, p: float, q: float) -> float:
    """num / (sqrt(p q) + 1e-6); NaN when p q < 0 (the square root does not exist)."""
    prod = p * q
    if prod < 0:
        return math.nan
    return num / (math.sqrt(prod) + GUARD)


def _hsic_unbiased_lists(cols: torch.Tensor, kv: torch.Tensor, lv: torch.Tensor) -> float:
    """Song et al. (2012) eq. 5 for sparse K~, L~ sharing one pattern given as N x k lists:
    row i holds K~[i, cols[i, p]] = kv[i, p] and L~[i, cols[i, p]] = lv[i, p] (0 = absent).
    No diagonal entries. The matrices need not be symmetric."""
    n = cols.shape[0]
    me = torch.arange(n, device=cols.device)[:, None, None]
    # L~[j, i] for each entry (i, j): row j's entries that point back at i
    lv_t = (lv[cols] * (cols[cols] == me)).sum(-1)
    trace_kl = float((kv * lv_t).sum())  # tr(K~ L~) = sum(K~ * L~^T)
    sums = float(kv.sum()) * float(lv.sum()) / ((n - 1) * (n - 2))
    # 1^T K~ L~ 1 = colsum(K~) . rowsum(L~) = sum_ij K~_ij rowsum(L~)_j
    cross = float((kv * lv.sum(dim=1)[cols]).sum())
    return (trace_kl + sums - 2.0 * cross / (n - 2)) / (n * (n - 3))


# ---- the eight metrics --------------------------------------------------------------------
def _mutual_knn(p: _Pair) -> float:
    in_b, _ = p.matches
    return float(in_b.double().sum(dim=1).mean()) / p.k


def _cycle_knn(p: _Pair) -> float:
    ia, _ = p.a.knn
    ib, _ = p.b.knn
    me = torch.arange(p.n, device=ia.device)[:, None, None]
    back = (ia[ib] == me).flatten(1).any(dim=1)  # i among the A-neighbours of a B-neighbour
    return float(back.double().mean())


def _lcs_lengths(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Longest common subsequence of each pair of rows (dynamic programme, all rows at once)."""
    n, k = x.shape
    prev = torch.zeros((n, k + 1), dtype=torch.long, device=x.device)
    for i in range(k):
        cur = torch.zeros_like(prev)
        for j in range(k):
            match = prev[:, j] + 1
            best = torch.maximum(prev[:, j + 1], cur[:, j])
            cur[:, j + 1] = torch.where(x[:, i] == y[:, j], match, best)
        prev = cur
    return prev[:, k]


def _levenshtein(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Edit distance (insert, delete, substitute; cost 1) of each pair of rows."""
    n, k = x.shape
    prev = torch.arange(k + 1, device=x.device).expand(n, k + 1).clone()
    for i in range(k):
        cur = torch.empty_like(prev)
        cur[:, 0] = i + 1
        for j in range(k):
            sub = prev[:, j] + (x[:, i] != y[:, j]).long()
            cur[:, j + 1] = torch.minimum(torch.minimum(prev[:, j + 1] + 1, cur[:, j] + 1), sub)
        prev = cur
    return prev[:, k]


def _lcs_knn(p: _Pair) -> float:
    return float(_lcs_lengths(p.a.knn[0], p.b.knn[0]).double().mean())


def _edit_distance_knn(p: _Pair) -> float:
    return 1.0 - float(_levenshtein(p.a.knn[0], p.b.knn[0]).double().mean()) / p.k


def _cka(p: _Pair) -> float:
    return _guarded_ratio(p.cross_frob, p.a.self_frob, p.b.self_frob)


def _unbiased_cka(p: _Pair) -> float:
    da, db = p.a.sq_norms, p.b.sq_norms
    return _guarded_ratio(p.hsic_unbiased(p.cross_frob, da, db),
                          p.hsic_unbiased(p.a.self_frob, da, da),
                          p.hsic_unbiased(p.b.self_frob, db, db))


def _cknna(p: _Pair) -> float:
    ia, va = p.a.knn
    ib, vb = p.b.knn
    in_b, l_at_a = p.matches
    # M = M_K * M_L lives on A's neighbour positions that B shares
    kl = _hsic_unbiased_lists(ia, va * in_b, l_at_a * in_b)
    kk = _hsic_unbiased_lists(ia, va, va)
    ll = _hsic_unbiased_lists(ib, vb, vb)
    return _guarded_ratio(kl, kk, ll)


def _canonical_correlations(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """CCA of two centred bases: the singular values of Lu^-1 (u^T v) Lv^-T, where
    u^T u = Lu Lu^T and v^T v = Lv Lv^T (Cholesky), i.e. of Q_u^T Q_v for orthonormal Q."""
    lu = torch.linalg.cholesky(u.T @ u)
    lv = torch.linalg.cholesky(v.T @ v)
    m = torch.linalg.solve_triangular(lu, u.T @ v, upper=False)
    m = torch.linalg.solve_triangular(lv, m.T, upper=False).T
    return torch.linalg.svdvals(m)


def _svcca(p: _Pair) -> float:
    ua, ub = p.a.svcca_basis, p.b.svcca_basis
    if ua.shape[1] == 0 or ub.shape[1] == 0:
        return math.nan  # a side with no variance has no directions to correlate
    return float(_canonical_correlations(ua, ub).mean())


_FUNCS = {
    "cycle_knn": _cycle_knn,
    "mutual_knn": _mutual_knn,
    "lcs_knn": _lcs_knn,
    "cka": _cka,
    "unbiased_cka": _unbiased_cka,
    "cknna": _cknna,
    "svcca": _svcca,
    "edit_distance_knn": _edit_distance_knn,
}
_UNBIASED = {"unbiased_cka", "cknna"}


# ---- public entry points ------------------------------------------------------------------
def _check_pair(a, b, topk: int, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_matrix(a, "a"), _as_matrix(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b have different N: {a.shape[0]} and {b.shape[0]} rows")
    if a.device != b.device:
        raise ValueError(f"a and b are on different devices: {a.device} and {b.device}")
    n = a.shape[0]
    if n <= topk + 1:
        raise ValueError(f"N must be larger than topk + 1: N={n}, topk={topk}")
    if n <= 3 and _UNBIASED.intersection(names):
        raise ValueError(f"the unbiased HSIC needs N > 3, got N={n}")
    return a, b


def score_all(a, b, *, metrics: Sequence[str] = METRICS, topk: int = 10,
              block_rows: int | None = None) -> dict[str, float]:
    """Score prepared features a, b (N x D_a, N x D_b) with each metric; shared pieces (one
    neighbour list and one set of kernel terms per side) are computed once.
    `block_rows` forces the block size of all blocked work: the kernel tile side and the
    rows per chunk (default: from the memory available; tests use it)."""
    names = _check_metrics(metrics)
    topk = _check_topk(topk)
    block_rows = _check_block_rows(block_rows)
    a, b = _check_pair(a, b, topk, names)
    pair = _Pair(_Side(a, topk, block_rows), _Side(b, topk, block_rows))
    return {name: float(_FUNCS[name](pair)) for name in names}


def score(metric: str, a, b, *, topk: int = 10, block_rows: int | None = None) -> float:
    """One metric of prepared features a, b."""
    if not isinstance(metric, str):
        raise ValueError(f"metric must be a name, got {metric!r}")
    return score_all(a, b, metrics=[metric], topk=topk, block_rows=block_rows)[metric]


# ---- command line -------------------------------------------------------------------------
def load_features(path) -> torch.Tensor:
    """An N x D float tensor from .npy (no pickles) or .pt (a plain tensor, weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            x = torch.from_numpy(np.load(path, allow_pickle=False))
        elif suffix == ".pt":
            x = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise UserError(f"{path}: expected a .npy or .pt file")
    except UserError:
        raise
    except Exception as e:  # corrupt files raise many types; name the file and the cause
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: cannot read features ({reason})") from e
    if not isinstance(x, torch.Tensor):
        raise UserError(f"{path}: expected a tensor, found {type(x).__name__}")
    try:
        return _as_matrix(x, str(path))
    except ValueError as e:
        raise UserError(str(e)) from e
