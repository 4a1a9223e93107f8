"""repr_sim.splits against docs/protocol.md section 1.

Expected sizes are computed here straight from the protocol's definitions (a brute-force
search over every candidate n or c), and checked against hand-computed small cases.
"""

from __future__ import annotations

import dataclasses
import json
import random
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repr_sim import splits
from repr_sim.splits import (
    chunk_split,
    class_indices,
    corpus_split,
    dataset_split,
    relabel,
    task_split,
)

MODES = ("constrained", "unconstrained")
STUDY_FRACS = [i / 10 for i in range(11)]
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------
# Oracles: the protocol's definitions, written naively
# ---------------------------------------------------------------------------------------


def expected_n(m: int, alpha: float, mode: str) -> int:
    if mode == "constrained":
        return m // 2
    return max(n for n in range(m + 1) if 2 * n - round(alpha * n) <= m)


def expected_c(num_classes: int, alpha: float, mode: str) -> int | None:
    if mode == "constrained":
        return num_classes // 2
    fits = [c for c in range(3, num_classes + 1) if 2 * c - round(alpha * c) <= num_classes]
    return max(fits) if fits else None


# ---------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------

fracs = st.one_of(st.sampled_from(STUDY_FRACS), st.floats(0.0, 1.0))
seeds = st.integers(0, 2**32 - 1)


@st.composite
def label_arrays(draw, min_size=2, max_size=25, min_classes=1, max_classes=8):
    """Labels with arbitrary (distinct, possibly negative) class ids, unequal sizes, shuffled."""
    sizes = draw(
        st.lists(st.integers(min_size, max_size), min_size=min_classes, max_size=max_classes)
    )
    ids = draw(
        st.lists(st.integers(-5, 500), min_size=len(sizes), max_size=len(sizes), unique=True)
    )
    labels = np.repeat(np.asarray(ids, dtype=np.int64), sizes)
    return labels[np.random.default_rng(draw(seeds)).permutation(len(labels))]


def class_sizes(labels: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(labels, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


def count_in(labels: np.ndarray, idx: np.ndarray, cls: int) -> int:
    return int(np.sum(labels[idx] == cls))


def assert_sorted_unique_int64(idx: np.ndarray, size: int) -> None:
    assert idx.dtype == np.int64 and idx.ndim == 1
    assert np.all(np.diff(idx) > 0), "indices must be sorted and unique"
    if len(idx):
        assert 0 <= idx[0] and idx[-1] < size


# ---------------------------------------------------------------------------------------
# Dataset split
# ---------------------------------------------------------------------------------------


def check_dataset_split(labels, alpha, mode, split) -> None:
    sizes = class_sizes(labels)
    plan = {cls: expected_n(m, alpha, mode) for cls, m in sizes.items()}
    shared_k = {cls: round(alpha * n) for cls, n in plan.items()}

    for idx in (split.a, split.b, split.shared):
        assert_sorted_unique_int64(idx, len(labels))
    assert np.array_equal(split.shared, np.intersect1d(split.a, split.b))
    own_a = np.setdiff1d(split.a, split.shared)
    own_b = np.setdiff1d(split.b, split.shared)
    assert len(np.intersect1d(own_a, own_b)) == 0

    total = sum(plan.values())
    assert len(split.a) == len(split.b) == total
    for cls, m in sizes.items():
        n, k = plan[cls], shared_k[cls]
        assert count_in(labels, split.a, cls) == n
        assert count_in(labels, split.b, cls) == n
        assert count_in(labels, split.shared, cls) == k
        assert 2 * n - k <= m  # shared + both own parts fit in the class
    assert split.overlap == sum(shared_k.values()) / total
    assert (split.kind, split.frac, split.mode) == ("dataset", alpha, mode)


@PROPERTY
@given(labels=label_arrays(), alpha=fracs, mode=st.sampled_from(MODES), seed=seeds)
def test_dataset_split_invariants(labels, alpha, mode, seed):
    split = dataset_split(labels, alpha, mode=mode, seed=seed)
    check_dataset_split(labels, alpha, mode, split)
    assert split.seed == seed


@PROPERTY
@given(
    num_classes=st.integers(1, 12), m=st.integers(2, 40), alpha=fracs, mode=st.sampled_from(MODES)
)
def test_dataset_split_equal_classes_overlap_is_k_over_n(num_classes, m, alpha, mode):
    labels = np.repeat(np.arange(num_classes), m)
    split = dataset_split(labels, alpha, mode=mode, seed=1)
    n = expected_n(m, alpha, mode)
    k = round(alpha * n)
    assert len(split.a) == len(split.b) == n * num_classes
    assert len(split.shared) == k * num_classes
    assert split.overlap == pytest.approx(k / n, rel=1e-12)


@PROPERTY
@given(labels=label_arrays(min_size=1, max_size=4), alpha=fracs)
def test_unconstrained_small_classes_split_or_fail(labels, alpha):
    # A class of m = 1 can be split only when both models share it (round(alpha) = 1).
    if min(expected_n(m, alpha, "unconstrained") for m in class_sizes(labels).values()) == 0:
        with pytest.raises(ValueError, match="too few"):
            dataset_split(labels, alpha, mode="unconstrained")
    else:
        split = dataset_split(labels, alpha, mode="unconstrained")
        check_dataset_split(labels, alpha, "unconstrained", split)


@pytest.mark.parametrize(
    ("m", "alpha", "mode", "n", "k"),
    [
        (10, 0.3, "constrained", 5, 2),  # round(1.5) = 2
        (10, 0.1, "constrained", 5, 0),  # round(0.5) = 0: halves go to even
        (10, 0.7, "constrained", 5, 4),  # round(3.5) = 4
        (11, 0.5, "constrained", 5, 2),  # 11 // 2 = 5, round(2.5) = 2
        (10, 0.0, "unconstrained", 5, 0),  # 2n <= 10
        # n = 7: 14 - round(3.5) = 14 - 4 = 10 <= 10; n = 8: 16 - 4 = 12 > 10
        (10, 0.5, "unconstrained", 7, 4),
        # n = 5: 10 - round(0.5) = 10 <= 10; n = 6: 12 - round(0.6) = 11 > 10
        (10, 0.1, "unconstrained", 5, 0),
        (10, 1.0, "unconstrained", 10, 10),  # both models see the whole class
        # n = 2: 4 - round(1.0) = 3 <= 3; n = 3: 6 - round(1.5) = 4 > 3
        (3, 0.5, "unconstrained", 2, 1),
        (1, 1.0, "unconstrained", 1, 1),
    ],
)
def test_dataset_split_hand_cases(m, alpha, mode, n, k):
    labels = np.repeat([3, 8], m)  # two classes of m each
    split = dataset_split(labels, alpha, mode=mode, seed=7)
    for cls in (3, 8):
        assert count_in(labels, split.a, cls) == n
        assert count_in(labels, split.b, cls) == n
        assert count_in(labels, split.shared, cls) == k
    assert split.overlap == k / n


def test_dataset_split_unequal_class_sizes_by_hand():
    # sizes 4, 10, 7 at alpha 0.5: n = 2, 5, 3; k = round(1.0), round(2.5), round(1.5) = 1, 2, 2
    labels = np.repeat([0, 1, 2], [4, 10, 7])
    split = dataset_split(labels, 0.5, seed=3)
    assert [count_in(labels, split.a, c) for c in range(3)] == [2, 5, 3]
    assert [count_in(labels, split.b, c) for c in range(3)] == [2, 5, 3]
    assert [count_in(labels, split.shared, c) for c in range(3)] == [1, 2, 2]
    assert split.overlap == 5 / 10


def test_dataset_split_accepts_whole_number_float_labels():
    labels = np.repeat(np.arange(4), 6)
    by_int = dataset_split(labels, 0.4, seed=5)
    by_float = dataset_split(labels.astype(np.float32), 0.4, seed=5)
    assert by_int == by_float
    assert dataset_split(labels.tolist(), 0.4, seed=5) == by_int


# ---------------------------------------------------------------------------------------
# Task split
# ---------------------------------------------------------------------------------------


def check_task_split(labels, alpha, mode, split) -> None:
    classes = sorted(set(labels.tolist()))
    c = expected_c(len(classes), alpha, mode)
    k = round(alpha * c)

    a_cls, b_cls, shared_cls = split.classes_a, split.classes_b, split.shared_classes
    assert len(a_cls) == len(b_cls) == c
    assert len(set(a_cls)) == len(set(b_cls)) == c
    assert set(a_cls) | set(b_cls) <= set(classes)
    assert len(shared_cls) == k
    assert set(a_cls) & set(b_cls) == set(shared_cls)
    assert a_cls[:k] == b_cls[:k] == shared_cls  # shared first, one common order

    for cls_list, label_map in ((a_cls, split.label_map_a), (b_cls, split.label_map_b)):
        assert set(label_map) == set(cls_list)
        assert sorted(label_map.values()) == list(range(c))  # bijective onto 0..c-1
        assert [label_map[cls] for cls in cls_list] == list(range(c))
    for cls in shared_cls:
        assert split.label_map_a[cls] == split.label_map_b[cls] < k

    # Each model sees every example of its classes and nothing else.
    expect_a = [i for i, lab in enumerate(labels.tolist()) if lab in set(a_cls)]
    expect_b = [i for i, lab in enumerate(labels.tolist()) if lab in set(b_cls)]
    expect_shared = [i for i, lab in enumerate(labels.tolist()) if lab in set(shared_cls)]
    assert split.a.tolist() == expect_a
    assert split.b.tolist() == expect_b
    assert split.shared.tolist() == expect_shared
    for idx in (split.a, split.b, split.shared):
        assert_sorted_unique_int64(idx, len(labels))
    assert np.array_equal(split.shared, np.intersect1d(split.a, split.b))
    assert split.overlap == len(expect_shared) / len(expect_a)

    mapped = relabel(labels[split.a], split.label_map_a)
    assert mapped.tolist() == [split.label_map_a[lab] for lab in labels[split.a].tolist()]
    assert (split.kind, split.frac, split.mode) == ("task", alpha, mode)


@PROPERTY
@given(
    labels=label_arrays(min_size=1, max_size=6, min_classes=1, max_classes=20),
    alpha=fracs,
    mode=st.sampled_from(MODES),
    seed=seeds,
)
def test_task_split_invariants_or_rejection(labels, alpha, mode, seed):
    num_classes = len(set(labels.tolist()))
    c = expected_c(num_classes, alpha, mode)
    if c is None or c == 0:
        with pytest.raises(ValueError, match="classes"):
            task_split(labels, alpha, mode=mode, seed=seed)
        return
    check_task_split(labels, alpha, mode, task_split(labels, alpha, mode=mode, seed=seed))


@pytest.mark.parametrize(
    ("num_classes", "alpha", "mode", "c", "k"),
    [
        (10, 0.2, "constrained", 5, 1),
        (10, 0.5, "constrained", 5, 2),  # round(2.5) = 2
        (100, 0.4, "constrained", 50, 20),
        (10, 0.0, "unconstrained", 5, 0),
        # c = 7: 14 - round(4.2) = 10 <= 10; c = 8: 16 - round(4.8) = 11 > 10
        (10, 0.6, "unconstrained", 7, 4),
        (10, 1.0, "unconstrained", 10, 10),
        (4, 1.0, "unconstrained", 4, 4),
        # c = 3: 6 - round(1.5) = 4 <= 5; c = 4: 8 - 2 = 6 > 5
        (5, 0.5, "unconstrained", 3, 2),
    ],
)
def test_task_split_hand_cases(num_classes, alpha, mode, c, k):
    labels = np.tile(np.arange(num_classes), 3)
    split = task_split(labels, alpha, mode=mode, seed=2)
    assert len(split.classes_a) == len(split.classes_b) == c
    assert len(split.shared_classes) == k
    assert split.overlap == k / c  # equal class sizes: example overlap = class overlap


@PROPERTY
@given(labels=label_arrays(min_size=1, max_size=3, min_classes=2, max_classes=20), alpha=fracs)
def test_task_split_label_order_is_ascending_within_groups(labels, alpha):
    # Documented order: shared classes ascending, then own classes ascending.
    split = task_split(labels, alpha, seed=11)
    k = len(split.shared_classes)
    assert split.shared_classes == sorted(split.shared_classes)
    assert split.classes_a[k:] == sorted(split.classes_a[k:])
    assert split.classes_b[k:] == sorted(split.classes_b[k:])


def test_task_split_unequal_classes_overlap_counts_examples():
    # C = 4, alpha 1 in constrained mode: c = 2, k = 2, both models get the same 2 classes.
    labels = np.repeat([0, 1, 2, 3], [1, 2, 3, 4])
    split = task_split(labels, 1.0)
    assert split.classes_a == split.classes_b == split.shared_classes
    assert split.overlap == 1.0
    assert len(split.a) == sum([1, 2, 3, 4][c] for c in split.classes_a)


@pytest.mark.parametrize(
    ("num_classes", "alpha", "mode"),
    [
        (1, 0.5, "constrained"),
        (5, 0.0, "unconstrained"),
        (4, 0.0, "unconstrained"),
        (2, 1.0, "unconstrained"),
    ],
)
def test_task_split_too_few_classes(num_classes, alpha, mode):
    with pytest.raises(ValueError, match="classes"):
        task_split(np.arange(num_classes), alpha, mode=mode)


# ---------------------------------------------------------------------------------------
# Chunk split
# ---------------------------------------------------------------------------------------


def check_chunk_split(n_tokens, alpha, block_size, num_chunks, split) -> None:
    chunk_len = max(block_size, n_tokens // num_chunks)
    per_model = num_chunks // 2
    k = int(alpha * per_model)
    assert split.chunk_len == chunk_len
    for chunks in (split.chunks_a, split.chunks_b, split.shared):
        assert chunks == sorted(chunks)
        for start, end in chunks:
            assert 0 <= start < end <= n_tokens
            assert end - start == chunk_len
            assert start % chunk_len == 0  # on the grid of num_chunks equal chunks
            assert start // chunk_len < num_chunks
            # Any window of block_size + 1 tokens starting in the chunk's valid range fits.
            last_start = end - (block_size + 1)
            assert last_start >= start
        for (_, end), (next_start, _) in zip(chunks, chunks[1:], strict=False):
            assert end <= next_start  # non-overlapping
    assert len(split.chunks_a) == len(split.chunks_b) == per_model
    assert len(set(split.chunks_a)) == len(set(split.chunks_b)) == per_model
    assert set(split.shared) == set(split.chunks_a) & set(split.chunks_b)
    assert len(split.shared) == k
    own_a = set(split.chunks_a) - set(split.shared)
    own_b = set(split.chunks_b) - set(split.shared)
    assert not own_a & own_b
    assert split.overlap == k / per_model


@PROPERTY
@given(
    block_size=st.integers(1, 40),
    num_chunks=st.integers(2, 100),
    extra=st.integers(0, 3000),
    alpha=fracs,
    seed=seeds,
)
def test_chunk_split_invariants(block_size, num_chunks, extra, alpha, seed):
    n_tokens = num_chunks * (block_size + 1) + extra
    split = chunk_split(n_tokens, alpha, block_size=block_size, num_chunks=num_chunks, seed=seed)
    check_chunk_split(n_tokens, alpha, block_size, num_chunks, split)


@pytest.mark.parametrize(
    ("alpha", "shared"),
    [(0.0, 0), (0.2, 8), (0.4, 16), (0.6, 24), (0.8, 32), (1.0, 40), (0.33, 13)],
)
def test_chunk_split_study_fractions(alpha, shared):
    # 1000 tokens into 80 chunks: chunk_len = 1000 // 80 = 12, tokens 960..999 unused.
    split = chunk_split(1000, alpha, block_size=5)
    assert split.chunk_len == 12
    assert len(split.chunks_a) == len(split.chunks_b) == 40
    assert len(split.shared) == shared
    assert max(end for _, end in split.chunks_a + split.chunks_b) <= 960


def test_chunk_split_odd_chunk_count():
    split = chunk_split(700, 0.5, block_size=10, num_chunks=7)  # 3 chunks each, int(1.5) = 1
    assert split.chunk_len == 100
    assert len(split.chunks_a) == 3 and len(split.shared) == 1


def test_chunk_split_block_size_too_large():
    # 80 * 12 = 960 tokens: a chunk of 12 holds a window of 12 (block 11) but not 13 (block 12).
    chunk_split(960, 0.5, block_size=11)
    with pytest.raises(ValueError, match="block_size 12"):
        chunk_split(960, 0.5, block_size=12)
    # block_size above n_tokens // num_chunks: fewer than 80 chunks of block_size fit.
    with pytest.raises(ValueError, match="block_size 13"):
        chunk_split(960, 0.5, block_size=13)
    with pytest.raises(ValueError, match="block_size 256"):
        chunk_split(10_000, 0.5, block_size=256)


# ---------------------------------------------------------------------------------------
# Corpus split
# ---------------------------------------------------------------------------------------


@PROPERTY
@given(
    names=st.lists(
        st.text("abcdefgh_", min_size=1, max_size=6), min_size=2, max_size=12, unique=True
    ),
    alpha=fracs,
    seed=seeds,
)
def test_corpus_split_invariants(names, alpha, seed):
    split = corpus_split(names, alpha, seed=seed)
    per_model = len(names) // 2
    k = round(per_model * alpha)
    assert len(split.a) == len(split.b) == per_model
    assert len(set(split.a)) == len(set(split.b)) == per_model
    assert set(split.a) | set(split.b) <= set(names)
    assert set(split.a) & set(split.b) == set(split.shared)
    assert len(split.shared) == k
    for subset in (split.a, split.b, split.shared):
        assert subset == [name for name in names if name in subset]  # order of `names`
    assert split.overlap == k / per_model
    assert split.names == names


STUDY_CORPORA = [
    "tinycodes",
    "tinystories",
    "tinytextbooks",
    "tinywebtext",
    "wikitext",
    "shakespeare_all",
]


@pytest.mark.parametrize(
    ("alpha", "shared"), [(0.0, 0), (1 / 3, 1), (2 / 3, 2), (1.0, 3), (0.5, 2)]
)
def test_corpus_split_study_fractions(alpha, shared):
    split = corpus_split(STUDY_CORPORA, alpha, seed=4)  # round(3 * 0.5) = round(1.5) = 2
    assert len(split.a) == len(split.b) == 3
    assert len(split.shared) == shared
    neither = set(STUDY_CORPORA) - set(split.a) - set(split.b)
    assert len(neither) == shared  # 6 - (3 + 3 - shared)


# ---------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------

LABELS = np.repeat(np.arange(10), 50)


def make_all(seed):
    return [
        dataset_split(LABELS, 0.5, seed=seed),
        dataset_split(LABELS, 0.5, mode="unconstrained", seed=seed),
        task_split(LABELS, 0.4, seed=seed),
        task_split(LABELS, 0.4, mode="unconstrained", seed=seed),
        chunk_split(100_000, 0.5, block_size=64, seed=seed),
        corpus_split(STUDY_CORPORA, 1 / 3, seed=seed),
    ]


def test_same_seed_same_split_and_no_global_state():
    first = make_all(0)
    np.random.seed(123)  # global state must not matter
    random.seed(456)
    np_state = np.random.get_state()
    py_state = random.getstate()
    again = make_all(0)
    assert first == again
    # ... and is left untouched.
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1])
    assert after[2:] == np_state[2:]


def test_different_seed_different_split():
    for one, other in zip(make_all(0), make_all(1), strict=True):
        assert one != other, one.kind
        assert one.overlap == other.overlap  # sizes depend only on the inputs


# ---------------------------------------------------------------------------------------
# Objects, save and load
# ---------------------------------------------------------------------------------------


def test_split_objects_are_frozen():
    split = dataset_split(LABELS, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        split.a = split.b
    with pytest.raises(ValueError):
        split.a[0] = 1  # read-only arrays


def test_equality_compares_array_values():
    one = dataset_split(LABELS, 0.5, seed=3)
    two = dataset_split(LABELS, 0.5, seed=3)
    assert one is not two and one.a is not two.a
    assert one == two
    changed = dataclasses.replace(one, a=one.a.copy()[::-1].copy())
    assert one != changed
    assert one != task_split(LABELS, 0.5, seed=3)


@pytest.mark.parametrize("index", range(6))
def test_save_load_roundtrip(tmp_path, index):
    split = make_all(5)[index]
    splits.save(split, tmp_path / "split_indices")
    loaded = splits.load(tmp_path / "split_indices")
    assert loaded == split
    assert type(loaded) is type(split)
    if hasattr(split, "label_map_a"):
        assert all(type(key) is int for key in loaded.label_map_a)
        assert loaded.label_map_b == split.label_map_b
    if hasattr(split, "chunks_a"):
        assert all(type(chunk) is tuple for chunk in loaded.chunks_a)
    # Index arrays are plain .npy files that load without pickles.
    for npy in (tmp_path / "split_indices").glob("*.npy"):
        assert np.load(npy, allow_pickle=False).dtype == np.int64
    meta = json.loads((tmp_path / "split_indices" / "split.json").read_text())
    assert meta["kind"] == split.kind and meta["overlap"] == split.overlap


@settings(max_examples=25, deadline=None)
@given(labels=label_arrays(min_size=2, max_size=8, min_classes=2), alpha=fracs, seed=seeds)
def test_save_load_roundtrip_property(labels, alpha, seed):
    with tempfile.TemporaryDirectory() as folder:
        for split in (
            dataset_split(labels, alpha, seed=seed),
            task_split(labels, alpha, seed=seed),
            chunk_split(5000, alpha, block_size=8, num_chunks=10, seed=seed),
            corpus_split(["x", "y", "z", "w"], alpha, seed=seed),
        ):
            splits.save(split, folder)
            assert splits.load(folder) == split


def test_save_over_another_kind(tmp_path):
    splits.save(dataset_split(LABELS, 0.5), tmp_path)
    chunk = chunk_split(100_000, 0.2, block_size=32)
    splits.save(chunk, tmp_path)
    assert splits.load(tmp_path) == chunk


def test_killed_save_leaves_no_split(tmp_path, monkeypatch):
    splits.save(dataset_split(LABELS, 0.5, seed=0), tmp_path)
    real_save, calls = np.save, []

    def dies_on_second_array(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is killed half-way through saving
        return real_save(*args, **kwargs)

    monkeypatch.setattr(splits.np, "save", dies_on_second_array)
    with pytest.raises(KeyboardInterrupt):
        splits.save(dataset_split(LABELS, 0.5, seed=1), tmp_path)
    monkeypatch.undo()
    # Neither the old split (its a.npy is already replaced) nor a half-written new one.
    with pytest.raises(ValueError, match="no split in"):
        splits.load(tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_load_folder_without_split(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path / "nowhere")):
        splits.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no split in"):
        splits.load(tmp_path / "empty")


def test_load_rejects_broken_folders(tmp_path):
    splits.save(dataset_split(LABELS, 0.5), tmp_path)
    (tmp_path / "b.npy").unlink()
    with pytest.raises(ValueError, match=r"b\.npy"):
        splits.load(tmp_path)

    np.save(tmp_path / "b.npy", np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="int64"):
        splits.load(tmp_path)

    np.save(tmp_path / "b.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"b\.npy"):
        splits.load(tmp_path)  # never unpickled

    (tmp_path / "split.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        splits.load(tmp_path)

    (tmp_path / "split.json").write_text(json.dumps({"format": 1, "kind": "mystery"}))
    with pytest.raises(ValueError, match="unknown split kind"):
        splits.load(tmp_path)

    (tmp_path / "split.json").write_text(json.dumps({"format": 1, "kind": "corpus", "a": []}))
    with pytest.raises(ValueError, match="'b' is missing"):
        splits.load(tmp_path)


def test_save_rejects_non_split(tmp_path):
    with pytest.raises(ValueError, match="not a split"):
        splits.save({"a": [1]}, tmp_path)


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def test_class_indices_and_relabel_by_hand():
    labels = np.array([4, 1, 4, 7, 1, 9])
    assert class_indices(labels, [4, 9]).tolist() == [0, 2, 5]
    assert class_indices(labels, []).tolist() == []
    assert class_indices(labels, [2]).dtype == np.int64
    assert relabel(labels, {4: 0, 1: 1, 7: 2, 9: 3}).tolist() == [0, 1, 0, 2, 1, 3]
    assert relabel(np.array([], dtype=np.int64), {4: 0}).tolist() == []
    with pytest.raises(ValueError, match="not in the label map: 7, 9"):
        relabel(labels, {4: 0, 1: 1})
    with pytest.raises(ValueError, match="label map is empty"):
        relabel(labels, {})


def test_task_split_test_data_relabelled_the_same_way():
    train = np.repeat(np.arange(10), 5)
    test = np.repeat(np.arange(10), 2)[::-1].copy()
    split = task_split(train, 0.6)
    idx = class_indices(test, split.shared_classes)
    new_a = relabel(test[idx], split.label_map_a)
    new_b = relabel(test[idx], split.label_map_b)
    assert np.array_equal(new_a, new_b)  # shared classes map identically
    assert set(new_a.tolist()) == set(range(len(split.shared_classes)))


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------

GOOD = np.repeat(np.arange(4), 6)


@pytest.mark.parametrize("split_fn", [dataset_split, task_split])
@pytest.mark.parametrize(
    ("labels", "frac", "kwargs", "message"),
    [
        (GOOD, -0.1, {}, r"frac must be in \[0, 1\], got -0.1"),
        (GOOD, 1.5, {}, r"frac must be in \[0, 1\], got 1.5"),
        (GOOD, float("nan"), {}, r"frac must be in \[0, 1\], got nan"),
        (GOOD, True, {}, "frac must be a number"),
        (GOOD, "0.5", {}, "frac must be a number"),
        (GOOD, 0.5, {"mode": "both"}, "mode must be one of constrained, unconstrained"),
        (GOOD, 0.5, {"seed": -1}, "seed must be >= 0"),
        (GOOD, 0.5, {"seed": 1.5}, "seed must be an integer"),
        (GOOD.astype(float) + 0.5, 0.5, {}, "non-integer value 0.5"),
        (np.array([0.0, 1.0, np.inf]), 0.5, {}, "non-integer value inf"),
        (GOOD > 1, 0.5, {}, "got booleans"),
        (GOOD.reshape(4, 6), 0.5, {}, r"1-D array, got shape \(4, 6\)"),
        (np.array([], dtype=np.int64), 0.5, {}, "labels are empty"),
        (np.array(["a", "b"]), 0.5, {}, "labels must be integers, got dtype"),
        ([[0, 1], [2]], 0.5, {}, "labels must be a 1-D array of integers"),
    ],
)
def test_image_split_bad_input(split_fn, labels, frac, kwargs, message):
    with pytest.raises(ValueError, match=message):
        split_fn(labels, frac, **kwargs)


@pytest.mark.parametrize(
    ("labels", "mode", "frac"),
    [
        (np.array([0, 0, 1, 2, 2]), "constrained", 0.5),  # class 1: m = 1 gives n = 0
        (np.array([0, 0, 1, 2, 2]), "unconstrained", 0.5),  # 2 - round(0.5) = 2 > 1
    ],
)
def test_dataset_split_too_few_examples_names_the_class(labels, mode, frac):
    with pytest.raises(ValueError, match=r"class 1 has 1 example\(s\): too few"):
        dataset_split(labels, frac, mode=mode)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0, 0.5), {"block_size": 4}, "n_tokens must be >= 1"),
        ((1000, 0.5), {"block_size": 0}, "block_size must be >= 1"),
        ((1000, 0.5), {"block_size": 4, "num_chunks": 1}, "num_chunks must be >= 2"),
        ((1000, 1.2), {"block_size": 4}, r"frac must be in \[0, 1\]"),
        ((1000.0, 0.5), {"block_size": 4}, "n_tokens must be an integer"),
        ((1000, 0.5), {"block_size": 4, "seed": -3}, "seed must be >= 0"),
    ],
)
def test_chunk_split_bad_input(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        chunk_split(*args, **kwargs)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["only"], "at least 2 corpora"),
        ([], "at least 2 corpora"),
        (["a", "b", "a"], "distinct, repeated: a"),
        (["a", 3], "non-empty strings, got 3"),
        (["a", ""], "non-empty strings"),
        ("abcd", "list of corpus names"),
    ],
)
def test_corpus_split_bad_input(names, message):
    with pytest.raises(ValueError, match=message):
        corpus_split(names, 0.5)


def test_errors_are_user_errors():
    from repr_sim.errors import UserError

    with pytest.raises(UserError):
        dataset_split(GOOD, 2.0)
    with pytest.raises(UserError):
        splits.load(Path("/nonexistent/folder"))
