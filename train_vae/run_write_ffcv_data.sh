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
usage() { sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//p}' "$0"; }
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

opts=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --data-root) opts+=(--data-root "$(absolute "${2:?--data-root needs a folder}")"); shift 2 ;;
        --data-root=*) opts+=(--data-root "$(absolute "${1#*=}")"); shift ;;
        --download) opts+=(--download); shift ;;
        --workers) opts+=(--workers "${2:?--workers needs a number}"); shift 2 ;;
        --workers=*) opts+=(--workers "${1#*=}"); shift ;;
        *) echo "run_write_ffcv_data.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "${REPRSIM_DATA:-}" ] && export REPRSIM_DATA="$(absolute "$REPRSIM_DATA")"

# Run from the repository, so that the default data root is its data/ folder.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
reprsim=reprsim
[ -x .venv/bin/reprsim ] && reprsim=.venv/bin/reprsim

"$reprsim" write-data cifar10 --resolution 28 ${opts[@]+"${opts[@]}"}
"$reprsim" write-data mnist svhn --resolution 28 ${opts[@]+"${opts[@]}"}
