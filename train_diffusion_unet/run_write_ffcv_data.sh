#!/usr/bin/env bash
# Write the FFCV betons the diffusion experiments need, under <data root>/ffcv/<name>/:
# cifar10 (train, test; 32x32) for diffusion_cifar10_{ds,task}. With --tiny, the built-in
# generated shapes data at 16x16 instead (shapes_16, train and test; no download, no raw
# files), for tiny_diffusion_ds. TinyImageNet (diffusion_tinyimagenet_ds) is written by
# train_tinyimagenet_ffcv/run_write_ffcv_data.sh. Complete betons are kept.
#
#   bash run_write_ffcv_data.sh [--tiny] [--data-root DIR] [--download] [--workers N]
#
#   --tiny           the generated data of the tiny experiment instead of CIFAR-10
#   --data-root DIR  raw datasets and betons (default: $REPRSIM_DATA, else data/ in the repository)
#   --download       let torchvision fetch missing raw files (needs internet)
#   --workers N      writer processes (default: the CPUs this process may use)
set -euo pipefail
body="$(dirname "${BASH_SOURCE[0]}")/../repr_sim/sh/write_data.sh"
group='cifar10'
rest=()
for arg in "$@"; do
    if [ "$arg" = --tiny ]; then group='shapes --resolution 16'; else rest+=("$arg"); fi
done
exec bash "$body" "$0" "$group" -- ${rest[@]+"${rest[@]}"}
