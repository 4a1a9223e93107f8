"""The built-in data: generated shape/digit/colour images, label sets, folders, OOD sets."""

import itertools
import os

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from repr_sim.data import shapes as S
from repr_sim.data import shapetree as T

PALETTE = np.array([S.PALETTE[c] for c in S.COLORS], dtype=float)
VALUE_NAMES = {
    "shape": list(S.SHAPES),
    "digit": [str(d) for d in S.DIGITS],
    "color": list(S.COLORS),
}
KEPT = {
    "shape": ("shape",),
    "digit": ("digit",),
    "color": ("color",),
    "shape_digit": ("shape", "digit"),
    "shape_color": ("shape", "color"),
    "digit_color": ("digit", "color"),
    "all": ("shape", "digit", "color"),
}


def expected_name(attrs, i, label):
    """The class name of image i under a label set, built from the attribute values."""
    return "_".join(VALUE_NAMES[a][attrs[a][i]] for a in KEPT[label])


def palette_counts(images, radius=40.0):
    """[N, 10] number of pixels within `radius` (RGB distance) of each palette colour."""
    px = images.reshape(len(images), -1, 3).astype(float)
    # |x - p|^2 = |x|^2 - 2 x.p + |p|^2, without an [N, P, 10, 3] temporary
    square = (px**2).sum(axis=2)[:, :, None] - 2 * px @ PALETTE.T + (PALETTE**2).sum(axis=1)
    return (square < radius**2).sum(axis=1)


# ------------------------------------------------------------------ determinism


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not():
    a = S.generate(600, seed=3, label="all")
    b = S.generate(600, seed=3, label="all")
    c = S.generate(600, seed=4, label="all")
    assert a[0].tobytes() == b[0].tobytes()
    assert np.array_equal(a[1], b[1])
    assert all(np.array_equal(a[2][k], b[2][k]) for k in S.ATTRIBUTES)
    same = (a[0] == c[0]).all(axis=(1, 2, 3))
    assert not same.any()
    assert not np.array_equal(a[1], c[1])


def test_images_do_not_depend_on_n_or_on_how_the_work_is_chunked(monkeypatch):
    stream = S._STREAMS["full", "train"]
    full, attrs = S._render(0, 1100, size=20, seed=5, stream=stream)  # crosses 2 blocks
    bounds = [0, 100, 517, 1024, 1100]
    parts = [S._render(a, b, size=20, seed=5, stream=stream) for a, b in itertools.pairwise(bounds)]
    assert np.concatenate([p[0] for p in parts]).tobytes() == full.tobytes()
    for k in S.ATTRIBUTES:
        assert np.array_equal(np.concatenate([p[1][k] for p in parts]), attrs[k])
    # generate(m) is the first m images of generate(n); the compose batch is a speed knob.
    assert S.generate(300, size=20, seed=5)[0].tobytes() == full[:300].tobytes()
    monkeypatch.setattr(S, "_BATCH_PIXELS", 7 * 20 * 20)
    assert S.generate(600, size=20, seed=5)[0].tobytes() == full[:600].tobytes()


def test_splits_and_probe_sets_are_independent_streams():
    train = S.generate(200, seed=1, label="all")
    val = S.generate(200, seed=1, label="all", split="val")
    test = S.generate(200, seed=1, label="all", split="test")
    for other in (val, test):
        assert not (train[0] == other[0]).all(axis=(1, 2, 3)).any()
        assert (train[1] != other[1]).mean() > 0.9  # 800 classes: collisions are rare
    assert not np.array_equal(S.digit_only(200, seed=1)[1], S.shape_only(200, seed=1)[1][:200])


def test_attributes_do_not_depend_on_the_image_size():
    small, large = S.generate(300, size=8, seed=2)[2], S.generate(300, size=64, seed=2)[2]
    assert all(np.array_equal(small[k], large[k]) for k in S.ATTRIBUTES)


# ------------------------------------------------------------ shapes and labels


@pytest.mark.parametrize("size", [28, 32, 64])
def test_shapes_dtypes_and_ranges(size):
    images, labels, attrs = S.generate(70, size=size, seed=0, label="shape_color")
    assert images.shape == (70, size, size, 3) and images.dtype == np.uint8
    assert labels.shape == (70,) and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < 80
    for name, values in S.ATTRIBUTES.items():
        assert attrs[name].dtype == np.int64
        assert attrs[name].min() >= 0 and attrs[name].max() < len(values)
    assert images.std() > 20  # not blank
    for probe in (S.digit_only, S.shape_only):
        imgs, labs = probe(30, size=size, seed=0)
        assert imgs.shape == (30, size, size, 3) and imgs.dtype == np.uint8
        assert labs.dtype == np.int64 and labs.max() < (10 if probe is S.digit_only else 8)


def test_zero_images():
    images, labels, attrs = S.generate(0, size=16)
    assert images.shape == (0, 16, 16, 3) and labels.shape == (0,)
    assert all(len(v) == 0 for v in attrs.values())


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"label": "colour"}, "label"),
        ({"n": -1}, "n must"),
        ({"size": 4}, "size"),
        ({"seed": -2}, "seed"),
        ({"split": "dev"}, "split"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, word):
    args = {"n": 5, **kwargs}
    with pytest.raises(ValueError, match=word):
        S.generate(args.pop("n"), **args)


def test_every_class_is_present_and_attributes_are_uniform_and_independent():
    # Attributes do not depend on the size, so tiny images keep this test fast.
    _, labels, attrs = S.generate(12000, size=8, seed=0, label="all")
    assert len(np.unique(labels)) == 800
    for name, values in S.ATTRIBUTES.items():
        counts = np.bincount(attrs[name], minlength=len(values))
        assert stats.chisquare(counts).pvalue > 1e-3, (name, counts)
    for a, b in itertools.combinations(S.ATTRIBUTES, 2):
        table = np.zeros((len(S.ATTRIBUTES[a]), len(S.ATTRIBUTES[b])))
        np.add.at(table, (attrs[a], attrs[b]), 1)
        assert stats.chi2_contingency(table).pvalue > 1e-3, (a, b)


def test_label_names_follow_the_sorted_joined_name_rule():
    sizes = {"shape": 8, "digit": 10, "color": 10, "shape_digit": 80, "shape_color": 80,
             "digit_color": 100, "all": 800}  # fmt: skip
    for label, kept in KEPT.items():
        names = S.label_names(label)
        combos = ["_".join(c) for c in itertools.product(*(VALUE_NAMES[a] for a in kept))]
        assert names == sorted(combos)
        assert len(names) == sizes[label] == S.num_classes(label)
    # By hand: shapes sorted circle cross diamond heart ring square star(6) triangle;
    # colours sorted blue brown cyan green magenta orange pink purple red(8) yellow.
    assert S.label_names("shape") == ["circle", "cross", "diamond", "heart", "ring", "square",
                                      "star", "triangle"]  # fmt: skip
    assert S.label_names("shape_digit")[:3] == ["circle_0", "circle_1", "circle_2"]
    one = {"shape": np.array([6]), "digit": np.array([7]), "color": np.array([8])}
    hand = {"shape": 6, "digit": 7, "color": 8, "shape_digit": 67, "shape_color": 68,
            "digit_color": 78, "all": 678}  # fmt: skip
    for label, want in hand.items():
        assert S.label_from_attrs(one, label)[0] == want
    assert S.label_names("all")[678] == "star_7_red"


@pytest.mark.parametrize("label", S.LABELS)
def test_labels_are_the_attributes_joined_name_index(label):
    images, labels, attrs = S.generate(400, size=16, seed=9, label=label)
    names = S.label_names(label)
    assert [names[i] for i in labels] == [expected_name(attrs, i, label) for i in range(400)]
    # The label only relabels: images and attributes are those of any other label set.
    other_images, _, other_attrs = S.generate(400, size=16, seed=9, label="shape")
    assert other_images.tobytes() == images.tobytes()
    assert all(np.array_equal(attrs[k], other_attrs[k]) for k in S.ATTRIBUTES)


def test_label_from_attrs_rejects_bad_attrs():
    with pytest.raises(ValueError, match="digit"):
        S.label_from_attrs({"shape": np.array([1])}, "shape_digit")
    with pytest.raises(ValueError, match="color"):
        S.label_from_attrs({"color": np.array([10])}, "color")
    with pytest.raises(ValueError, match="unknown label"):
        S.label_from_attrs({"shape": np.array([1])}, "size")


# ------------------------------------------------------------ what the pixels show


def test_distance_tables_match_the_geometry():
    res, cell = 80, 12
    shapes, glyphs = S._shape_tables(res), S._glyph_tables(cell)
    half = S._SHAPE_HALF

    def sdf(shape, x, y):  # nearest sample of the table at (x, y) in shape units
        i, j = int((y + half) * res), int((x + half) * res)
        return shapes[S.SHAPES.index(shape), i, j]

    tol = 1.5 / res
    assert abs(sdf("circle", 0, 0) + 0.9) < tol and abs(sdf("circle", 1.2, 0) - 0.3) < tol
    assert abs(sdf("square", 1.0, 0) - 0.3) < tol and abs(sdf("square", 0, 0) + 0.7) < tol
    assert sdf("ring", 0, 0) > 0.5 and sdf("ring", 0.8, 0) < 0  # a hole in the middle
    assert sdf("cross", 0.8, 0) < 0 and sdf("cross", 0.7, 0.7) > 0  # arms, no corners
    assert sdf("diamond", 0, 0.9) < 0 and sdf("diamond", 0.9, 0) > 0  # taller than wide
    pad = S._GLYPH_PAD
    for digit, rows in S._FONT.items():
        for r, row in enumerate(rows):
            for c, ch in enumerate(row):
                centre = glyphs[digit, (r + pad) * cell + cell // 2, (c + pad) * cell + cell // 2]
                assert (centre < 0) == (ch == "#"), (digit, r, c)


def _same_stream(n, size, **layers):
    return S._render(0, n, size=size, seed=11, stream=S._STREAMS["full", "train"], **layers)


def test_the_shape_colour_is_the_most_present_palette_colour():
    full, attrs = _same_stream(300, 32)
    assert np.array_equal(palette_counts(full).argmax(axis=1), attrs["color"])
    shape_only, shape_labels = S.shape_only(300, size=32, seed=11)
    _, probe_attrs = S._render(0, 300, size=32, seed=11, stream=S._STREAMS["shape_only", "test"])
    assert np.array_equal(probe_attrs["shape"], shape_labels)
    assert np.array_equal(palette_counts(shape_only).argmax(axis=1), probe_attrs["color"])


def test_digit_only_images_have_no_shape_and_shape_only_images_no_digit():
    digits, _ = S.digit_only(300, size=32, seed=11)
    assert palette_counts(digits).sum(axis=1).max() < 0.01 * 32 * 32  # no coloured shape
    # Same stream, same parameters: leaving a layer out changes only that layer's pixels.
    full, _ = _same_stream(300, 32)
    no_digit, _ = _same_stream(300, 32, draw_digit=False)
    no_shape, _ = _same_stream(300, 32, draw_shape=False)
    neither, _ = _same_stream(300, 32, draw_shape=False, draw_digit=False)
    assert palette_counts(no_shape).sum(axis=1).max() < 0.01 * 32 * 32
    digit_on_shape = (full != no_digit).any(axis=3)
    digit_alone = (no_shape != neither).any(axis=3)
    shape_with_digit = (full != no_shape).any(axis=3)
    shape_alone = (no_digit != neither).any(axis=3)
    assert digit_on_shape.mean(axis=(1, 2)).min() > 0.03  # the digit is there...
    assert digit_on_shape.mean(axis=(1, 2)).max() < 0.4  # ...and leaves the shape visible
    assert shape_alone.mean(axis=(1, 2)).min() > 0.1
    # The digit's footprint is the same with or without the shape under it (up to pixels
    # of faint coverage that round alike), and the shape changes nothing outside its own.
    assert (digit_on_shape ^ digit_alone).sum() < 0.01 * digit_alone.sum()
    assert (shape_with_digit & ~shape_alone).sum() < 0.01 * shape_alone.sum()


# --------------------------------------------------------------------- OOD sets


def test_sklearn_digits_are_the_bundled_digits_scaled():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    native, labels = S.sklearn_digits(size=8)
    assert np.array_equal(native[..., 0], np.rint(bunch.images * 255 / 16).astype(np.uint8))
    assert np.array_equal(labels, bunch.target)
    big, _ = S.sklearn_digits(size=32)
    assert big.shape == (1797, 32, 32, 3) and big.dtype == np.uint8
    assert (big[..., 0] == big[..., 1]).all() and (big[..., 1] == big[..., 2]).all()
    assert abs(big.mean() - native.mean()) < 2.0  # bilinear upscaling keeps the mean


def test_sample_patches_are_deterministic_crops_of_the_photos():
    a, labels = S.sample_patches(40, size=32, seed=0)
    b, _ = S.sample_patches(40, size=32, seed=0)
    c, _ = S.sample_patches(40, size=32, seed=1)
    assert a.shape == (40, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(labels, np.zeros(40)) and labels.dtype == np.int64
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    # A crop at the native size is pixel-exact: each one is somewhere in a photo.
    photos = S._sample_photos()
    native, _ = S.sample_patches(5, size=200, seed=3)
    for patch in native:
        found = False
        for photo in photos:
            hits = np.argwhere((photo[:-199, :-199] == patch[0, 0]).all(axis=2))
            found |= any((photo[i : i + 200, j : j + 200] == patch).all() for i, j in hits)
        assert found


def test_ood_sets_use_no_rendering_code(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("rendering code used")

    for name in ("_render", "_render_block", "_compose", "_shape_tables", "_glyph_tables"):
        monkeypatch.setattr(S, name, boom)
    assert S.sklearn_digits(size=16)[0].shape == (1797, 16, 16, 3)
    assert S.sample_patches(10, size=16)[0].shape == (10, 16, 16, 3)


def image_features(images):
    """Per-image colour and texture statistics (colour, saturation, palette, pixel noise)."""
    x = images.reshape(len(images), -1, 3).astype(float)
    saturation = x.max(axis=2) - x.min(axis=2)
    palette = palette_counts(images) / x.shape[1]
    step = np.abs(np.diff(images.astype(float), axis=2)).mean(axis=3).reshape(len(images), -1)
    return np.column_stack([x.mean(1), x.std(1), saturation.mean(1), saturation.std(1),
                            palette.max(1), palette.sum(1), np.median(step, axis=1),
                            np.percentile(step, 95, axis=1)])  # fmt: skip


def test_ood_sets_differ_from_the_generated_distribution():
    from sklearn.ensemble import RandomForestClassifier

    generated = np.concatenate([S.generate(300, seed=0)[0], S.digit_only(150, seed=0)[0],
                                S.shape_only(150, seed=0)[0]])  # fmt: skip
    seen = {im.tobytes() for im in generated}
    for ood in (S.sklearn_digits(size=32)[0][:600], S.sample_patches(600, size=32)[0]):
        assert not any(im.tobytes() in seen for im in ood)
        x = np.concatenate([image_features(generated), image_features(ood)])
        y = np.r_[np.zeros(len(generated)), np.ones(len(ood))]
        order = np.random.default_rng(0).permutation(len(y))
        train, test = order[: len(y) // 2], order[len(y) // 2 :]
        # A held-out classifier on simple statistics tells the two sources apart.
        model = RandomForestClassifier(100, random_state=0).fit(x[train], y[train])
        assert model.score(x[test], y[test]) > 0.95


# ------------------------------------------------------------ partition folders


def walk_tree(split_dir):
    """[(folder name, file index, pixels)] read with PIL directly, in sorted order."""
    found = []
    for folder in sorted(os.listdir(split_dir)):
        if folder.startswith("."):
            continue
        for name in sorted(os.listdir(split_dir / folder)):
            pixels = np.asarray(Image.open(split_dir / folder / name))
            found.append((folder, int(name.removesuffix(".png")), pixels))
    return found


@pytest.mark.parametrize("h, w", [(1, 1), (7, 5), (28, 28), (3, 64)])
def test_png_encoder_is_lossless_for_a_standard_reader(h, w):
    import io

    pixels = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(T.encode_png(pixels))) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (w, h)
        assert np.array_equal(np.asarray(im), pixels)


def test_partition_tree_roundtrip_and_every_label_set(tmp_path):
    base = T.write_partition_tree(tmp_path, 300, 120, size=28, seed=2)
    assert base == tmp_path / "partition3"
    assert sorted(os.listdir(base)) == ["train", "val"]  # no temporary folders left
    for split, n in (("train", 300), ("val", 120)):
        images, labels, attrs = S.generate(n, size=28, seed=2, label="all", split=split)
        on_disk = walk_tree(base / split)
        assert sorted(i for _, i, _ in on_disk) == list(range(n))
        assert len({f for f, _, _ in on_disk}) == len(np.unique(labels))  # only used classes
        read_images, read_attrs = T.read_partition_tree(tmp_path, split)
        assert read_images.shape == (n, 28, 28, 3) and read_images.dtype == np.uint8
        for j, (folder, index, pixels) in enumerate(on_disk):
            assert np.array_equal(pixels, images[index])  # pixel-exact PNG
            assert np.array_equal(read_images[j], images[index])
            assert folder == S.label_names("all")[labels[index]]
            parts = dict(zip(("shape", "digit", "color"), folder.split("_"), strict=True))
            for label, kept in KEPT.items():
                want = S.label_names(label).index("_".join(parts[a] for a in kept))
                assert S.label_from_attrs(read_attrs, label)[j] == want


def test_partition_tree_is_reused_and_refuses_other_parameters(tmp_path, monkeypatch):
    T.write_partition_tree(tmp_path, 40, 20, size=16, seed=0)

    def no_writing(*args, **kwargs):
        raise AssertionError("rewrote an existing tree")

    monkeypatch.setattr(T, "_write_pngs", no_writing)
    T.write_partition_tree(tmp_path, 40, 20, size=16, seed=0)
    with pytest.raises(ValueError, match="already exists"):
        T.write_partition_tree(tmp_path, 41, 20, size=16, seed=0)


def test_an_interrupted_write_leaves_no_partial_split(tmp_path, monkeypatch):
    real = T._write_pngs
    calls = []

    def dies_on_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "_write_pngs", dies_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        T.write_partition_tree(tmp_path, 50, 10, size=16, seed=0, chunk=20)
    assert os.listdir(tmp_path / "partition3") == []
    monkeypatch.setattr(T, "_write_pngs", real)
    T.write_partition_tree(tmp_path, 50, 10, size=16, seed=0, chunk=20)
    assert len(T.read_partition_tree(tmp_path, "train")[0]) == 50


def make_tree(root, folders, size=28):
    rng = np.random.default_rng(0)
    made = []
    for folder in folders:
        (root / "partition3" / "train" / folder).mkdir(parents=True)
        for k in range(2):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "partition3" / "train" / folder / f"im{k}.png")
            made.append(pixels)
    return made


def test_read_a_published_style_tree(tmp_path):
    made = make_tree(tmp_path, ["circle_7_blue", "triangle_0_red"])
    (tmp_path / "partition3" / "train" / ".DS_Store").write_text("x")
    (tmp_path / "partition3" / "train" / "README.txt").write_text("x")
    images, attrs = T.read_partition_tree(tmp_path, "train")
    assert np.array_equal(images, np.stack(made))
    # By hand: circle = 0, blue = 0; triangle = 7, red = 8.
    assert attrs["shape"].tolist() == [0, 0, 7, 7]
    assert attrs["digit"].tolist() == [7, 7, 0, 0]
    assert attrs["color"].tolist() == [0, 0, 8, 8]
    assert S.label_from_attrs(attrs, "all").tolist() == [70, 70, 708, 708]
    # The partition3 folder itself is accepted as the root too.
    assert np.array_equal(T.read_partition_tree(tmp_path / "partition3", "train")[0], images)


@pytest.mark.parametrize("bad", ["circle_7_octarine", "hexagon_1_red", "circle_12_red",
                                 "notaclass", "circle_7_blue_x"])  # fmt: skip
def test_unknown_folder_name_is_an_error_naming_it(tmp_path, bad):
    make_tree(tmp_path, ["circle_7_blue", bad])
    with pytest.raises(ValueError, match=bad):
        T.read_partition_tree(tmp_path, "train")


def test_read_errors(tmp_path):
    with pytest.raises(ValueError, match="no partition folder"):
        T.read_partition_tree(tmp_path, "train")
    (tmp_path / "partition3" / "val" / "circle_1_red").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        T.read_partition_tree(tmp_path, "val")
    make_tree(tmp_path, ["circle_7_blue"], size=28)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(
        tmp_path / "partition3" / "train" / "circle_7_blue" / "odd.png"
    )
    with pytest.raises(ValueError, match="odd.png"):
        T.read_partition_tree(tmp_path, "train")
