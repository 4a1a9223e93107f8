#!/usr/bin/env bash
# Write the FFCV betons the fine-tuning experiments need, under <data root>/ffcv/<name>/:
# cifar100 and tinyimagenet (train, test; the dataset and task splits), cifar10 (test: a
# probe of the dataset-overlap measurement) and, with --partitions, the ColorShapeDigit800k
# betons of the label partitions (train_task_only/prepare_data.py). Complete betons are
# kept, so a second run only checks them. Pretrained weights are not fetched here: see
# README.md (`huggingface-cli download timm/<model>.<tag>` on a machine with internet).
#
#   bash run_write_ffcv_data.sh [--tiny] [--partitions] [--data-root DIR] [--download] [--workers N]
#
#   --tiny           only the tiny experiment's inputs, generated here (no dataset, no
#                    internet): shapes at 16 px, two probe sets, random-init weights files
#   --partitions     also the ColorShapeDigit800k partition betons
#   --data-root DIR  raw datasets and betons (default: $REPRSIM_DATA, else data/ in the repository)
#   --download       let torchvision fetch missing raw files (needs internet)
#   --workers N      writer processes (default: the CPUs this process may use)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=python3
[ -x "$here/../.venv/bin/python" ] && python="$here/../.venv/bin/python"
tiny=0
partitions=0
rest=()
for arg in "$@"; do
    case "$arg" in
        --tiny) tiny=1 ;;
        --partitions) partitions=1 ;;
        -h | --help) sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) rest+=("$arg") ;;
    esac
done
if [ "$tiny" = 1 ]; then
    absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
    [ -n "${REPRSIM_DATA:-}" ] && export REPRSIM_DATA="$(absolute "$REPRSIM_DATA")"
    root=()
    for ((i = 0; i < ${#rest[@]}; i++)); do
        case "${rest[$i]}" in
            --data-root) root=(--data-root "$(absolute "${rest[$((i + 1))]}")"); i=$((i + 1)) ;;
            --data-root=*) root=(--data-root "$(absolute "${rest[$i]#*=}")") ;;
            *) echo "run_write_ffcv_data.sh: --tiny takes only --data-root, not '${rest[$i]}'" >&2; exit 2 ;;
        esac
    done
    cd "$here/.."
    exec "$python" -m repr_sim.kinds.finetune.tinydata ${root[@]+"${root[@]}"}
fi
bash "$here/../repr_sim/sh/write_data.sh" "$0" 'cifar100 tinyimagenet' 'cifar10 --splits test' -- ${rest[@]+"${rest[@]}"}
if [ "$partitions" = 1 ]; then
    "$python" "$here/../train_task_only/prepare_data.py" ${rest[@]+"${rest[@]}"}
fi
