#!/usr/bin/env bash
# Write the FFCV betons the TinyImageNet experiments need, under <data root>/ffcv/<name>/:
# tinyimagenet (train, and the labelled validation set as test, after regrouping its
# images into class folders) and the probes mnist and svhn at 64x64 (test) as mnist_64 and
# svhn_64. Complete betons are kept, so a second run only checks them.
#
#   bash run_write_ffcv_data.sh [--data-root DIR] [--download] [--workers N]
#
#   --data-root DIR  raw datasets and betons (default: $REPRSIM_DATA, else data/ in the repository)
#   --download       let torchvision fetch missing MNIST/SVHN files (needs internet); TinyImageNet
#                    has no downloader: unzip tiny-imagenet-200.zip into the data root
#   --workers N      writer processes (default: the CPUs this process may use)
set -euo pipefail
usage() { sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//p}' "$0"; }
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

root=() download=() workers=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --data-root) root=(--data-root "$(absolute "${2:?--data-root needs a folder}")"); shift 2 ;;
        --data-root=*) root=(--data-root "$(absolute "${1#*=}")"); shift ;;
        --download) download=(--download); shift ;;
        --workers) workers=(--workers "${2:?--workers needs a number}"); shift 2 ;;
        --workers=*) workers=(--workers "${1#*=}"); shift ;;
        *) echo "run_write_ffcv_data.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "${REPRSIM_DATA:-}" ] && export REPRSIM_DATA="$(absolute "$REPRSIM_DATA")"

# Run from the repository, so that the default data root is its data/ folder.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
reprsim=reprsim
[ -x .venv/bin/reprsim ] && reprsim=.venv/bin/reprsim

"$reprsim" reorg-tinyimagenet ${root[@]+"${root[@]}"}
"$reprsim" write-data tinyimagenet ${root[@]+"${root[@]}"} ${workers[@]+"${workers[@]}"}
"$reprsim" write-data mnist svhn --resolution 64 ${root[@]+"${root[@]}"} \
    ${download[@]+"${download[@]}"} ${workers[@]+"${workers[@]}"}
