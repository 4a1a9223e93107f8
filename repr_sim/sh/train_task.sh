#!/bin/bash
# The body of every training folder's run_train.sh (the task of a sweep's SLURM job array),
# kept once here; run_train.sh finds this file and runs it with its own path first:
#
#   train_task.sh [--torchrun] SCRIPT TASKFILE [reprsim train options...]
#
# SCRIPT is the calling run_train.sh (its header comments are its --help). The task is line
# SLURM_ARRAY_TASK_ID (0-based; TASK_ID when run by hand) of TASKFILE; reprsim reads it:
#   reprsim sweep --task ID --task-file TASKFILE --train-args "[options]"
# or with --torchrun
#   torchrun --standalone --nproc_per_node=<GPUs of the allocation, 1 if none> \
#       -m repr_sim sweep --task ID --task-file TASKFILE --train-args "[options]"
# GPUs are counted from SLURM_GPUS_ON_NODE, else CUDA_VISIBLE_DEVICES, else (outside a
# SLURM job only) nvidia-smi; NPROC=N overrides.
# PAIRS_PER_GPU=M (exported by `reprsim sweep --pairs-per-gpu M`): this element runs tasks
# ID*M .. ID*M+M-1 of TASKFILE at once on its GPU (not with --torchrun).
set -euo pipefail
launch=reprsim
[ "${1:-}" = --torchrun ] && { launch=torchrun; shift; }
script=${1:?usage: train_task.sh [--torchrun] SCRIPT TASKFILE [options...]}
shift
name=$(basename "$script")
case "${1:-}" in -h | --help) sed -n '2,/^set -e/{/^#SBATCH/d;/^set -e/d;s/^# \{0,1\}//p}' "$script"; exit 0 ;; esac
task_file=${1:?usage: $name TASKFILE [reprsim train options...]}
shift

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)  # this file is <root>/repr_sim/sh/
venv="$root/.venv/bin"

count_gpus() {
    if [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then
        echo "$SLURM_GPUS_ON_NODE"
    elif [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
        awk -F, '{print NF}' <<<"$CUDA_VISIBLE_DEVICES"
    elif [ -n "${SLURM_JOB_ID:-}" ]; then
        # A job given no GPU (SLURM sets the two above when it gives some): nvidia-smi
        # would list the node's GPUs, which belong to other jobs.
        echo 0
    elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        nvidia-smi -L | grep -c '^GPU'
    else
        echo 0
    fi
}

id=${SLURM_ARRAY_TASK_ID:-${TASK_ID:-0}}
train_args=""
[ $# -eq 0 ] || train_args=$(printf '%q ' "$@")
task=(sweep --task "$id" --task-file "$task_file" --train-args "$train_args")
packed=${PAIRS_PER_GPU:-1}
[[ "$packed" =~ ^[0-9]+$ ]] && [ "$packed" -ge 1 ] || packed=1
[ "$launch" = reprsim ] && [ "$packed" -gt 1 ] && task+=(--pairs-per-gpu "$packed")

if [ "$launch" = reprsim ]; then
    reprsim=reprsim
    [ -x "$venv/reprsim" ] && reprsim="$venv/reprsim"
    if [ "$packed" -gt 1 ]; then
        echo "tasks $((id * packed))..$((id * packed + packed - 1)) of $task_file on $(hostname)"
    else
        echo "task $id of $task_file on $(hostname)"
    fi
    exec "$reprsim" "${task[@]}"
fi

if [ "$packed" -gt 1 ]; then
    echo "$name: PAIRS_PER_GPU=$packed packs pairs into processes; a --torchrun task is one" \
        "pair over all GPUs of its element: submit it without --pairs-per-gpu" >&2
    exit 2
fi
if [ -x "$venv/torchrun" ]; then
    torchrun=("$venv/torchrun")
elif command -v torchrun >/dev/null; then
    torchrun=(torchrun)
else
    torchrun=(python3 -m torch.distributed.run)
fi
nproc=${NPROC:-$(count_gpus)}
[[ "$nproc" =~ ^[0-9]+$ ]] && [ "$nproc" -ge 1 ] || nproc=1
echo "task $id of $task_file on $(hostname), $nproc process(es)"
cd "$root"
exec "${torchrun[@]}" --standalone --nproc_per_node="$nproc" -m repr_sim "${task[@]}"
