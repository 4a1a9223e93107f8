#!/usr/bin/env bash
# Write the FFCV betons the CIFAR experiments need, under <data root>/ffcv/<name>/:
# cifar10 and cifar100 (train, test) and the out-of-distribution probes mnist and svhn
# (test, 32x32). Complete betons are kept, so a second run only checks them.
#
#   bash run_write_ffcv_data.sh [--data-root DIR] [--download] [--workers N]
#
#   --data-root DIR  raw datasets and betons (default: $REPRSIM_DATA, else data/ in the repository)
#   --download       let torchvision fetch missing raw files (needs internet)
#   --workers N      writer processes (default: the CPUs this process may use)
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/../repr_sim/sh/write_data.sh" "$0" 'cifar10 cifar100 mnist svhn' -- "$@"
