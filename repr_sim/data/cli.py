"""Handlers of `reprsim write-data` and `reprsim reorg-tinyimagenet`."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import UserError
from ..paths import data_root


def _root(args) -> Path:
    return Path(args.data_root).expanduser().resolve() if args.data_root else data_root()


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")


def cli_write_data(args) -> int:
    from . import registry
    from .betons import write_dataset

    _logging()
    if args.name and len(args.datasets) > 1:
        raise UserError("--name needs exactly one dataset")
    if args.resolution is not None and args.resolution < 1:
        raise UserError(f"--resolution must be positive, got {args.resolution}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be positive, got {args.workers}")
    for name in args.datasets:  # fail on a typo before writing anything
        registry.get(name)
    root = _root(args)
    for name in args.datasets:
        for result in write_dataset(name, root=root, resolution=args.resolution,
                                    out_name=args.name, splits=args.splits,
                                    download=args.download, workers=args.workers):
            print(f"{'wrote' if result.written else 'kept '} {result.path}", flush=True)
    return 0


def cli_reorg_tinyimagenet(args) -> int:
    from .raw import TINYIMAGENET_DIR, reorganize_tinyimagenet

    _logging()
    root = _root(args)
    counts = reorganize_tinyimagenet(root)
    print(f"{root / TINYIMAGENET_DIR / 'val'}: moved {counts['moved']} images into class folders, "
          f"{counts['already']} already there")
    return 0
