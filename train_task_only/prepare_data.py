#!/usr/bin/env python
"""Write the data of the label-partition experiment (docs/protocol.md section 2) as FFCV betons.

The images come from <data root>/ColorShapeDigit800k/partition3/{train,val}/<shape>_<digit>_<color>/:
put the published folders there, or pass --generate to let the built-in generator
(repr_sim.data.shapes) write a tree in the same layout when there is none. Written under
<data root>/ffcv/: colorshapedigit/{train,test}.beton (test = the val folder; one
800-class label per image, the label sets are label maps over it) and the probe sets at
28x28: cifar10_28, mnist_28, svhn_28 (the test parts of the raw datasets, which must be
under the data root or fetched with --download) and digit_only, shape_only (generated
digit-only and shape-only images). Complete betons are kept, so a rerun only checks them.
"""

import argparse
import logging
import sys
from pathlib import Path


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout, if not installed
    from repr_sim.data import partition
    from repr_sim.data.prepare import prepare_partition
    from repr_sim.errors import UserError

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=None, help="data root (default: $REPRSIM_DATA, else data/)")
    p.add_argument("--generate", action="store_true",
                   help="write the built-in generator's tree when there is none")
    p.add_argument("--n-train", type=int, default=partition.GENERATED_SIZES["train"],
                   help="generated training images (default %(default)s)")
    p.add_argument("--n-val", type=int, default=partition.GENERATED_SIZES["val"],
                   help="generated validation images (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--download", action="store_true",
                   help="let torchvision fetch missing CIFAR-10/MNIST/SVHN files (needs internet)")
    p.add_argument("--workers", type=int, default=None, help="writer processes (default: usable CPUs)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for w in prepare_partition(args.data_root and Path(args.data_root).expanduser().resolve(),
                                   generate=args.generate, n_train=args.n_train, n_val=args.n_val,
                                   seed=args.seed, download=args.download, workers=args.workers):
            print(f"{'wrote' if w.written else 'kept '} {w.path}", flush=True)
    except (UserError, ValueError) as e:
        print(f"prepare_data.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
