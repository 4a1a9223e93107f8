"""The tiny fine-tuning experiment's inputs, generated offline (no dataset, no download).

    python -m repr_sim.kinds.finetune.tinydata [--data-root DIR] [--side 16]

Writes under the data root ($REPRSIM_DATA, default data/):
- ffcv/shapes_<side>/{train,test}.beton: the first 1024 / 256 images of the registry's
  generated `shapes` set (8 classes) at <side> px;
- ffcv/sklearn_digits_<side>/ and ffcv/sample_patches_<side>/ test betons (probe sets);
- weights/tiny_resnet.safetensors and weights/tiny_vit.safetensors: randomly initialised
  timm models (seeded, 1000-way heads as timm's defaults), which the tiny configs load
  through the pretrained-file path as if they were downloaded weights.
Everything already complete is kept; a rerun writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

N_TRAIN, N_TEST = 1024, 256
PROBES = ("sklearn_digits", "sample_patches")
# The tiny models of the tiny configs (model_kwargs there must match these).
TINY_MODELS = {
    "tiny_resnet": ("resnet18", {"layers": [1, 1, 1, 1]}),  # one block per stage
    "tiny_vit": ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2,
                                          "embed_dim": 32, "num_heads": 2}),
}
WEIGHTS_SEED = 0


def write_images(root: Path, side: int, probes: bool = True, n_train: int = N_TRAIN,
                 n_test: int = N_TEST) -> int:
    from ...data import betons, shapes

    written = 0
    name = f"shapes_{side}"
    for split, n in (("train", n_train), ("test", n_test)):
        path = betons.beton_path(name, split, root)
        info = {"dataset": "shapes", "split": split, "resolution": side, "images": n, "seed": 0}
        if betons.is_complete(path, expect=info):
            print(f"kept  {path}", flush=True)
            continue
        # the registry's `shapes` entry (seed 0); image i does not depend on n
        images, labels, _ = shapes.generate(n, size=side, seed=0, label="shape", split=split)
        written += betons.write_beton(images, labels, path, workers=1, info=info)
        print(f"wrote {path}", flush=True)
    for probe in PROBES if probes else ():
        for result in betons.write_dataset(probe, root=root, resolution=side,
                                           out_name=f"{probe}_{side}", workers=1):
            written += result.written
            print(f"{'wrote' if result.written else 'kept '} {result.path}", flush=True)
    return written


def write_weights(root: Path) -> int:
    import torch

    from ...models import timm_models

    written = 0
    for name, (arch, kwargs) in TINY_MODELS.items():
        path = root / "weights" / f"{name}.safetensors"
        if path.is_file():
            print(f"kept  {path}", flush=True)
            continue
        torch.manual_seed(WEIGHTS_SEED)
        model = timm_models.create(arch, 1000, kwargs)
        digest = timm_models.save_weights(model, path)
        print(f"wrote {path} (sha256 {digest[:12]}...)", flush=True)
        written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m repr_sim.kinds.finetune.tinydata",
        description="Write the tiny fine-tuning experiment's generated data and random weights.")
    parser.add_argument("--data-root", default=None, help="default: $REPRSIM_DATA, else data/")
    parser.add_argument("--side", type=int, default=16, help="image side in pixels (default 16)")
    args = parser.parse_args(argv)
    from ...errors import UserError
    from ...paths import data_root

    if args.side < 8:
        print(f"{parser.prog}: error: --side must be at least 8, got {args.side}")
        return 2
    root = Path(args.data_root).expanduser().resolve() if args.data_root else data_root()
    try:
        write_images(root, args.side)
        write_weights(root)
    except UserError as e:
        print(f"{parser.prog}: error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
