"""The built-in study's data, written from the generators: no download, no dataset.

Images: the first n images of the registry entries `shapes` (labelled by shape) and
`shapes_color` (the same images labelled by colour: the demo's task-overlap experiment) at
a given side, as FFCV betons under `<root>/ffcv/<entry>/`, and the two OOD probe sets
(`sklearn_digits`, `sample_patches`) through the registry. Text: the six generated
domains of repr_sim.data.textgen, prepared with the byte tokenizer under `<root>/text/`.
Both are written only where missing or different, so a rerun writes nothing.
"""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_write_text

SHAPES_SEED = 0  # the registry's generated `shapes` set is drawn with seed 0
IMAGE_SETS = ("shapes", "shapes_color")  # one generated set, two labellings
IMAGE_PROBES = ("sklearn_digits", "sample_patches")
TEXT_TOKENIZER = "bytes"


def image_record(size: int, n_train: int, n_test: int) -> dict:
    """What an image data root holds (recorded in the demo's configs)."""
    return {"datasets": list(IMAGE_SETS), "size": size, "n_train": n_train, "n_test": n_test,
            "seed": SHAPES_SEED, "probes": list(IMAGE_PROBES)}


def write_images(root: Path, size: int, n_train: int, n_test: int) -> int:
    """The betons under `root`; returns how many were written (0: all reused).

    The generator's image i does not depend on n, so these are a prefix of the registry's
    set at this side."""
    from . import betons, registry

    written = 0
    for name in IMAGE_SETS:
        entry = registry.get(name)
        for split, n in (("train", n_train), ("test", n_test)):
            path = betons.beton_path(name, split, root)
            info = {"dataset": name, "split": split, "resolution": size, "images": n,
                    "seed": SHAPES_SEED}
            if betons.is_complete(path, expect=info):
                continue
            images, labels = entry.load(root, split, resolution=size)
            if n > len(images):
                raise ValueError(f"the {name} entry has {len(images)} {split} images, {n} were asked")
            written += betons.write_beton(images[:n], labels[:n], path, workers=1, info=info)
    for name in IMAGE_PROBES:
        results = betons.write_dataset(name, root=root, resolution=size, out_name=name, workers=1)
        written += sum(r.written for r in results)
    return written


def text_record(chars: int) -> dict:
    return {"generator": "repr_sim.data.textgen", "chars": chars, "seed": 0,
            "tokenizer": TEXT_TOKENIZER}


def write_text(root: Path, chars: int) -> int:
    """The six generated domains, `chars` characters each, prepared under `root`/text/.

    The raw files go to `root`/raw/<corpus>.txt; a corpus is prepared again only when its
    generated text changed (or it was never prepared). Returns how many were prepared."""
    from . import text as textdata
    from . import textgen

    prepared = 0
    for corpus in textgen.DOMAINS:
        path = root / "raw" / f"{corpus}.txt"
        content = textgen.render(corpus, textgen.generate(corpus, chars, seed=0))
        changed = not path.is_file() or path.read_text(encoding="utf-8") != content
        if changed:
            atomic_write_text(path, content)
        if changed or not textdata.is_prepared(corpus, root):
            textdata.prepare(corpus, data_files=[path], tokenizer=TEXT_TOKENIZER, num_proc=1,
                             root=root, force=True)
            prepared += 1
    return prepared
