"""Who sees which examples, classes, chunks and corpora (docs/protocol.md section 1).

Two models, A and B, are trained on subsets of one base dataset that overlap by a
fraction `frac` (alpha in the protocol). Four kinds of split:

- `dataset_split`: every class in both subsets; per class, `n` examples each of which
  `k = round(frac * n)` are shared (horizontal split).
- `task_split`: classes are split; each model gets `c` classes, `k = round(frac * c)` of
  them shared, and *all* examples of its classes (vertical split).
- `chunk_split`: a token stream is cut into `num_chunks` equal contiguous chunks; each
  model gets `num_chunks // 2` of them, `int(frac * (num_chunks // 2))` shared.
- `corpus_split`: each model gets `len(names) // 2` corpora, `round(...)` shared.

Rounding. `round` here is Python's built-in `round` applied to the float product
`frac * n`, which rounds halves to the even integer: round(0.5) = 0, round(1.5) = 2,
round(2.5) = 2. This is the protocol's formula taken literally (the study's code is
Python). The chunk split uses `int(...)`, i.e. truncation towards zero, as the protocol
states. The product is an IEEE float product, so a fraction that is not exactly
representable (0.1, 0.3, ...) is rounded as that float is: 0.3 * 5 == 1.5 exactly and
gives 2.

Every function works on label arrays only (never images), draws from its own
`numpy.random.default_rng(seed)` and touches no global random state, and rejects bad
input with a `ValueError` (`repr_sim.errors.UserError`) whose message names the problem.

`save(split, folder)` writes the index arrays as `.npy` (no pickles) and everything else
as `split.json`; `load(folder)` returns an object equal (`==`) to the saved one.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np

from .atomic import atomic_path, atomic_write_json
from .errors import UserError

MODES = ("constrained", "unconstrained")
SPLIT_FILE = "split.json"
FORMAT_VERSION = 1
_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min
_FLOAT_EXACT_INT = 2**53  # beyond this a float label may not be the integer it prints as

Range = tuple[int, int]


# ---------------------------------------------------------------------------------------
# Split objects
# ---------------------------------------------------------------------------------------


class _Split:
    """Common behaviour: equality by value (numpy arrays compared element-wise)."""

    kind: ClassVar[str]
    _array_fields: ClassVar[tuple[str, ...]] = ()
    # field name -> function turning the JSON value back into the field's value
    _decoders: ClassVar[dict[str, Callable]] = {}

    def __post_init__(self) -> None:
        # Frozen means frozen: the index arrays can't be edited in place either.
        for name in self._array_fields:
            getattr(self, name).setflags(write=False)

    def __eq__(self, other) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    __hash__ = None  # mutable-looking contents (arrays, dicts): not hashable


def _same(x, y) -> bool:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return (
            isinstance(x, np.ndarray)
            and isinstance(y, np.ndarray)
            and x.dtype == y.dtype
            and np.array_equal(x, y)
        )
    return type(x) is type(y) and x == y


def _int_keys(mapping: Mapping) -> dict[int, int]:
    return {int(k): int(v) for k, v in mapping.items()}


def _int_list(values: Iterable) -> list[int]:
    return [int(v) for v in values]


def _ranges(values: Iterable) -> list[Range]:
    return [(int(s), int(e)) for s, e in values]


def _str_list(values: Iterable) -> list[str]:
    return [str(v) for v in values]


@dataclass(frozen=True, eq=False)
class DatasetSplit(_Split):
    """Horizontal split. `a`, `b`, `shared`: sorted int64 indices into the labels."""

    a: np.ndarray
    b: np.ndarray
    shared: np.ndarray
    overlap: float  # realised |a ∩ b| / |a|
    frac: float
    mode: str
    seed: int

    kind: ClassVar[str] = "dataset"
    _array_fields: ClassVar[tuple[str, ...]] = ("a", "b", "shared")


@dataclass(frozen=True, eq=False)
class TaskSplit(_Split):
    """Vertical split. Class lists are original labels in label-map order."""

    a: np.ndarray
    b: np.ndarray
    shared: np.ndarray
    overlap: float  # realised |a ∩ b| / |a| (examples, not classes)
    frac: float
    mode: str
    seed: int
    classes_a: list[int]
    classes_b: list[int]
    shared_classes: list[int]
    label_map_a: dict[int, int]
    label_map_b: dict[int, int]

    kind: ClassVar[str] = "task"
    _array_fields: ClassVar[tuple[str, ...]] = ("a", "b", "shared")
    _decoders: ClassVar[dict[str, Callable]] = {
        "classes_a": _int_list,
        "classes_b": _int_list,
        "shared_classes": _int_list,
        "label_map_a": _int_keys,
        "label_map_b": _int_keys,
    }


@dataclass(frozen=True, eq=False)
class ChunkSplit(_Split):
    """Text dataset split. Chunks are half-open token ranges (start, end), sorted."""

    chunks_a: list[Range]
    chunks_b: list[Range]
    shared: list[Range]
    overlap: float  # shared chunks / chunks per model
    frac: float
    seed: int
    n_tokens: int
    block_size: int
    num_chunks: int
    chunk_len: int

    kind: ClassVar[str] = "chunk"
    _decoders: ClassVar[dict[str, Callable]] = {
        "chunks_a": _ranges,
        "chunks_b": _ranges,
        "shared": _ranges,
    }


@dataclass(frozen=True, eq=False)
class CorpusSplit(_Split):
    """Text task split. Name lists keep the order of `names` (all corpora offered)."""

    a: list[str]
    b: list[str]
    shared: list[str]
    overlap: float  # shared corpora / corpora per model
    frac: float
    seed: int
    names: list[str]

    kind: ClassVar[str] = "corpus"
    _decoders: ClassVar[dict[str, Callable]] = {
        "a": _str_list,
        "b": _str_list,
        "shared": _str_list,
        "names": _str_list,
    }


_KINDS: dict[str, type[_Split]] = {
    cls.kind: cls for cls in (DatasetSplit, TaskSplit, ChunkSplit, CorpusSplit)
}


# ---------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------


def _as_labels(labels, *, allow_empty: bool = False) -> np.ndarray:
    """A 1-D int64 copy-or-view of `labels`; floats only when every value is an integer."""
    try:
        arr = np.asarray(labels)
    except (ValueError, TypeError) as err:
        raise UserError(f"labels must be a 1-D array of integers ({err})") from None
    if arr.ndim != 1:
        raise UserError(f"labels must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        if allow_empty:
            return np.zeros(0, dtype=np.int64)
        raise UserError("labels are empty")
    kind = arr.dtype.kind
    if kind == "b":
        raise UserError("labels must be integers, got booleans")
    if kind == "u" and int(arr.max()) > _INT64_MAX:
        raise UserError(f"labels must fit in int64, got {int(arr.max())}")
    if kind in "iu":
        return arr.astype(np.int64, copy=False)
    if kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) > _FLOAT_EXACT_INT)
        if bad.any():
            raise UserError(
                f"labels must be integers, got non-integer value {float(arr[bad][0])} "
                f"(float labels are accepted only when every value is a whole number)"
            )
        return arr.astype(np.int64)
    raise UserError(f"labels must be integers, got dtype {arr.dtype}")


def _check_frac(frac) -> float:
    if isinstance(frac, bool | np.bool_) or not isinstance(frac, numbers.Real):
        raise UserError(f"frac must be a number in [0, 1], got {frac!r}")
    value = float(frac)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise UserError(f"frac must be in [0, 1], got {value}")
    return value


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise UserError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_mode(mode) -> str:
    if not isinstance(mode, str) or mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def _largest_fitting(budget: int, frac: float, lowest: int) -> int | None:
    """The largest n >= lowest with 2n - round(frac * n) <= budget, or None if none.

    The protocol's unconstrained size: two subsets of n that share round(frac * n)
    items need 2n - round(frac * n) distinct items. Since round(frac * n) <= n, no n
    above `budget` fits, so a scan down from `budget` finds the largest one directly
    from the definition.
    """
    for n in range(budget, lowest - 1, -1):
        if 2 * n - round(frac * n) <= budget:
            return n
    return None


def _three_way(items: np.ndarray, per_model: int, shared: int) -> tuple:
    """Split an already shuffled sequence into (shared, own_a, own_b)."""
    return (
        items[:shared],
        items[shared:per_model],
        items[per_model : 2 * per_model - shared],
    )


# ---------------------------------------------------------------------------------------
# Image splits
# ---------------------------------------------------------------------------------------


def _dataset_sizes(m: int, frac: float, mode: str, cls: int) -> tuple[int, int]:
    """(n, k) for one class of m examples."""
    if mode == "constrained":
        n = m // 2
    else:
        n = _largest_fitting(m, frac, 1) or 0
    if n == 0:
        raise UserError(
            f"class {cls} has {m} example(s): too few for a {mode} dataset split at "
            f"frac={frac} (each model needs at least one example of every class)"
        )
    return n, round(frac * n)


def dataset_split(labels, frac, *, mode: str = "constrained", seed: int = 0) -> DatasetSplit:
    """Horizontal split: every class in both subsets, `n` examples of it in each.

    Per class with m examples: constrained n = m // 2; unconstrained n = the largest n
    with 2n - round(frac * n) <= m. k = round(frac * n) (Python's round, halves to even)
    examples are shared; each subset adds n - k of its own, drawn without replacement
    from the rest. Class sizes may differ; n and k are per class. `overlap` is the
    realised sum(k) / sum(n).
    """
    labels = _as_labels(labels)
    frac = _check_frac(frac)
    mode = _check_mode(mode)
    seed = _check_int(seed, "seed", 0)

    classes, counts = np.unique(labels, return_counts=True)
    # Check every class before drawing anything, so the error names the first bad class.
    sizes = [
        _dataset_sizes(int(m), frac, mode, int(c)) for c, m in zip(classes, counts, strict=True)
    ]

    rng = np.random.default_rng(seed)
    # Indices grouped by class (classes ascending), ascending within a class: the draw
    # depends only on the labels and the seed, not on how the array was built.
    by_class = np.split(np.argsort(labels, kind="stable"), np.cumsum(counts)[:-1])
    shared, own_a, own_b = [], [], []
    for idx, (n, k) in zip(by_class, sizes, strict=True):
        parts = _three_way(rng.permutation(idx), n, k)
        shared.append(parts[0])
        own_a.append(parts[1])
        own_b.append(parts[2])

    shared_idx = np.sort(np.concatenate(shared)).astype(np.int64)
    a = np.sort(np.concatenate(shared + own_a)).astype(np.int64)
    b = np.sort(np.concatenate(shared + own_b)).astype(np.int64)
    return DatasetSplit(
        a=a,
        b=b,
        shared=shared_idx,
        overlap=len(shared_idx) / len(a),
        frac=frac,
        mode=mode,
        seed=seed,
    )


def _task_size(num_classes: int, frac: float, mode: str) -> int:
    if mode == "constrained":
        if num_classes < 2:
            raise UserError(f"a constrained task split needs at least 2 classes, got {num_classes}")
        return num_classes // 2
    c = _largest_fitting(num_classes, frac, 3)
    if c is None:
        raise UserError(
            f"too few classes for an unconstrained task split: {num_classes} classes, "
            f"but no c >= 3 has 2c - round(frac * c) <= {num_classes} at frac={frac}"
        )
    return c


def task_split(labels, frac, *, mode: str = "constrained", seed: int = 0) -> TaskSplit:
    """Vertical split: classes are divided, each model sees all examples of its classes.

    With C classes: constrained c = C // 2; unconstrained c = the largest c >= 3 with
    2c - round(frac * c) <= C. k = round(frac * c) (Python's round, halves to even)
    classes are shared. Which classes are shared or own is drawn at random; the label
    map of each model puts the shared classes first (new labels 0..k-1, ascending
    original label, the same in both models), then its own classes (k..c-1, ascending).
    `overlap` is the realised |a ∩ b| / |a| over examples.
    """
    labels = _as_labels(labels)
    frac = _check_frac(frac)
    mode = _check_mode(mode)
    seed = _check_int(seed, "seed", 0)

    classes = np.unique(labels)
    c = _task_size(len(classes), frac, mode)
    k = round(frac * c)
    rng = np.random.default_rng(seed)
    drawn = _three_way(rng.permutation(classes), c, k)
    shared, own_a, own_b = (sorted(_int_list(part)) for part in drawn)

    classes_a, classes_b = shared + own_a, shared + own_b
    a = class_indices(labels, classes_a)
    b = class_indices(labels, classes_b)
    shared_idx = class_indices(labels, shared)
    return TaskSplit(
        a=a,
        b=b,
        shared=shared_idx,
        overlap=len(shared_idx) / len(a),
        frac=frac,
        mode=mode,
        seed=seed,
        classes_a=classes_a,
        classes_b=classes_b,
        shared_classes=shared,
        label_map_a={cls: new for new, cls in enumerate(classes_a)},
        label_map_b={cls: new for new, cls in enumerate(classes_b)},
    )


def class_indices(labels, classes: Iterable[int]) -> np.ndarray:
    """Sorted int64 indices of the examples whose label is one of `classes`."""
    labels = _as_labels(labels, allow_empty=True)
    wanted = [_check_int(c, "class", _INT64_MIN) for c in classes]
    if not wanted:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.isin(labels, np.asarray(wanted, dtype=np.int64))).astype(np.int64)


def relabel(labels, label_map: Mapping[int, int]) -> np.ndarray:
    """`labels` mapped through `label_map` (original -> new), as int64.

    Every label must be in the map: a label the model never saw is a bug upstream, so it
    is rejected rather than silently mapped somewhere.
    """
    labels = _as_labels(labels, allow_empty=True)
    if not label_map:
        raise UserError("label map is empty")
    pairs = sorted(
        (_check_int(k, "label map key", _INT64_MIN), _check_int(v, "label map value", 0))
        for k, v in label_map.items()
    )
    keys = np.asarray([k for k, _ in pairs], dtype=np.int64)
    values = np.asarray([v for _, v in pairs], dtype=np.int64)
    pos = np.clip(np.searchsorted(keys, labels), 0, len(keys) - 1)
    missing = keys[pos] != labels
    if missing.any():
        absent = np.unique(labels[missing])
        shown = ", ".join(str(v) for v in absent[:10]) + (", ..." if len(absent) > 10 else "")
        raise UserError(f"labels not in the label map: {shown}")
    return values[pos]


# ---------------------------------------------------------------------------------------
# Text splits
# ---------------------------------------------------------------------------------------


def chunk_split(
    n_tokens: int, frac, *, block_size: int, num_chunks: int = 80, seed: int = 0
) -> ChunkSplit:
    """Text dataset split: contiguous chunks of one token stream.

    chunk_len = max(block_size, n_tokens // num_chunks); chunk i is the token range
    [i * chunk_len, (i + 1) * chunk_len) (tokens past the last chunk are unused). Each
    model gets num_chunks // 2 chunks, int(frac * (num_chunks // 2)) of them shared
    (truncation, as the protocol states). A training window is block_size + 1 tokens
    (inputs plus the shifted targets) and must lie inside one chunk, so every chunk must
    hold at least one window: n_tokens // num_chunks >= block_size + 1.
    """
    n_tokens = _check_int(n_tokens, "n_tokens", 1)
    frac = _check_frac(frac)
    block_size = _check_int(block_size, "block_size", 1)
    num_chunks = _check_int(num_chunks, "num_chunks", 2)
    seed = _check_int(seed, "seed", 0)

    chunk_len = max(block_size, n_tokens // num_chunks)
    if chunk_len * num_chunks > n_tokens:
        raise UserError(
            f"block_size {block_size} is too large for {n_tokens} tokens: "
            f"{num_chunks} chunks of {chunk_len} tokens do not fit"
        )
    if chunk_len < block_size + 1:
        raise UserError(
            f"block_size {block_size} is too large: a chunk of {chunk_len} tokens cannot "
            f"hold one training window of block_size + 1 = {block_size + 1} tokens"
        )

    per_model = num_chunks // 2
    k = int(frac * per_model)
    rng = np.random.default_rng(seed)
    drawn = _three_way(rng.permutation(num_chunks), per_model, k)
    shared, own_a, own_b = (sorted(_int_list(part)) for part in drawn)

    def ranges(ids: Iterable[int]) -> list[Range]:
        return [(i * chunk_len, (i + 1) * chunk_len) for i in sorted(ids)]

    return ChunkSplit(
        chunks_a=ranges(shared + own_a),
        chunks_b=ranges(shared + own_b),
        shared=ranges(shared),
        overlap=k / per_model,
        frac=frac,
        seed=seed,
        n_tokens=n_tokens,
        block_size=block_size,
        num_chunks=num_chunks,
        chunk_len=chunk_len,
    )


def _check_names(names) -> list[str]:
    if isinstance(names, str) or not isinstance(names, Sequence | np.ndarray):
        raise UserError(f"names must be a list of corpus names, got {names!r}")
    names = list(names)
    for name in names:
        if not isinstance(name, str) or not name:
            raise UserError(f"corpus names must be non-empty strings, got {name!r}")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"corpus names must be distinct, repeated: {', '.join(dupes)}")
    if len(names) < 2:
        raise UserError(f"a corpus split needs at least 2 corpora, got {len(names)}")
    return names


def corpus_split(names: Sequence[str], frac, *, seed: int = 0) -> CorpusSplit:
    """Text task split: each model trains on len(names) // 2 corpora.

    round(len(names) // 2 * frac) of them (Python's round, halves to even) are shared.
    The name lists keep the order of `names`.
    """
    names = _check_names(names)
    frac = _check_frac(frac)
    seed = _check_int(seed, "seed", 0)

    per_model = len(names) // 2
    k = round(per_model * frac)
    rng = np.random.default_rng(seed)
    drawn = _three_way(rng.permutation(len(names)), per_model, k)
    shared, own_a, own_b = (set(_int_list(part)) for part in drawn)

    def pick(ids: set[int]) -> list[str]:
        return [name for i, name in enumerate(names) if i in ids]

    return CorpusSplit(
        a=pick(shared | own_a),
        b=pick(shared | own_b),
        shared=pick(shared),
        overlap=k / per_model,
        frac=frac,
        seed=seed,
        names=names,
    )


# ---------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------


def _json_value(value):
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return [list(v) if isinstance(v, tuple) else v for v in value]
    return value


def save(split: _Split, folder) -> None:
    """Write `split` into `folder`: one `.npy` per index array, the rest in split.json.

    split.json is removed first and written last (every file atomically), so a run
    killed half-way leaves a folder that `load` reports as holding no split, never a
    mix of an old and a new split.
    """
    if type(split) not in _KINDS.values():
        raise UserError(f"not a split object: {type(split).__name__}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / SPLIT_FILE
    meta_path.unlink(missing_ok=True)

    meta = {"format": FORMAT_VERSION, "kind": split.kind}
    for f in fields(split):
        value = getattr(split, f.name)
        if f.name in split._array_fields:
            with atomic_path(folder / f"{f.name}.npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, value, allow_pickle=False)
        else:
            meta[f.name] = _json_value(value)
    atomic_write_json(meta_path, meta)


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"split file missing: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise UserError(f"{path}: not a readable index array ({err})") from None
    if arr.ndim != 1 or arr.dtype != np.int64:
        raise UserError(f"{path}: expected a 1-D int64 index array, got {arr.dtype} {arr.shape}")
    return arr


# Scalar fields by annotation (a string under `from __future__ import annotations`).
_SCALARS: dict[str, Callable] = {"float": float, "int": int, "str": str}


def load(folder) -> _Split:
    """The split saved in `folder` by `save` (equal to it)."""
    folder = Path(folder)
    meta_path = folder / SPLIT_FILE
    if not meta_path.is_file():
        raise UserError(f"no split in {folder}: {SPLIT_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{meta_path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("kind") not in _KINDS:
        kind = meta.get("kind") if isinstance(meta, dict) else None
        raise UserError(f"{meta_path}: unknown split kind {kind!r}")
    if meta.get("format") != FORMAT_VERSION:
        raise UserError(f"{meta_path}: unsupported format {meta.get('format')!r}")

    cls = _KINDS[meta["kind"]]
    values = {}
    for f in fields(cls):
        if f.name in cls._array_fields:
            values[f.name] = _load_array(folder / f"{f.name}.npy")
            continue
        if f.name not in meta:
            raise UserError(f"{meta_path}: field '{f.name}' is missing")
        decode = cls._decoders.get(f.name) or _SCALARS.get(f.type)
        try:
            values[f.name] = decode(meta[f.name]) if decode else meta[f.name]
        except (TypeError, ValueError) as err:
            raise UserError(f"{meta_path}: field '{f.name}' is malformed ({err})") from None
    return cls(**values)
