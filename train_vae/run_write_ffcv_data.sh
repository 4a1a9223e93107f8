#!/usr/bin/env bash
# Write the FFCV betons the VAE experiments need, under <data root>/ffcv/<name>/:
# cifar10 at 28x28 as cifar10_28 (train, test; the trainer turns it grey) and the
# out-of-distribution probes mnist_28 and svhn_28 (test). Complete betons are kept.
#
#   bash run_write_ffcv_data.sh [--data-root DIR] [--download] [--workers N]
#
#   --data-root DIR  raw datasets and betons (default: $REPRSIM_DATA, else data/ in the repository)
#   --download       let torchvision fetch missing raw files (needs internet)
#   --workers N      writer processes (default: the CPUs this process may use)
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/../repr_sim/sh/write_data.sh" "$0" 'cifar10 --resolution 28' 'mnist svhn --resolution 28' -- "$@"
