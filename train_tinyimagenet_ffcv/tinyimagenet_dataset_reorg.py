#!/usr/bin/env python
"""Group the tiny-imagenet-200 validation images into per-class folders.

The same as `reprsim reorg-tinyimagenet [--data-root DIR]`: moves val/images/<file> to
val/<wnid>/images/<file> following val/val_annotations.txt. Running it twice is harmless.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Works from any working directory, installed or not: the checkout is one folder up.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from repr_sim.cli import main

    sys.exit(main(["reorg-tinyimagenet", *sys.argv[1:]]))
