#!/bin/bash
# One task of a nanoGPT training sweep: the body of the SLURM job array that
# `reprsim sweep` (run_train_wrapper.sh) submits.
#
#   run_train.sh TASKFILE [reprsim train options...]
#
# The task is line SLURM_ARRAY_TASK_ID (0-based; TASK_ID when run by hand) of TASKFILE,
# "experiment<TAB>seed<TAB>frac". It starts
#   torchrun --standalone --nproc_per_node=<GPUs of the allocation, 1 if none> \
#       -m repr_sim train EXPERIMENT --seed S --frac F [options]
# so a multi-GPU allocation trains each model with DDP (the split depends on the seed
# only). GPUs are counted from SLURM_GPUS_ON_NODE, else CUDA_VISIBLE_DEVICES, else
# (outside a SLURM job only) nvidia-smi; NPROC=N overrides. Resources are the defaults
# below; change them the SLURM way (SBATCH_GRES=gpu:4, SBATCH_PARTITION, SBATCH_TIMELIMIT,
# ...) or with SBATCH_ARGS.
#SBATCH --job-name=reprsim_nanogpt
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^set -e/{/^#SBATCH/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac

task_file=${1:?usage: run_train.sh TASKFILE [reprsim train options...]}
shift

# The folder holding pyproject.toml, upward from $1.
find_root() {
    local dir
    dir=$(cd "$1" 2>/dev/null && pwd) || return 1
    while [ "$dir" != / ]; do
        [ -f "$dir/pyproject.toml" ] && { echo "$dir"; return 0; }
        dir=$(dirname "$dir")
    done
    return 1
}
# Under sbatch this file runs from a spooled copy: the project is found from the
# submission folder; run by hand, from this file's own folder.
root=$(find_root "$(dirname "${BASH_SOURCE[0]}")" || find_root "${SLURM_SUBMIT_DIR:-.}") || {
    echo "run_train.sh: cannot find the project (no pyproject.toml above this script or the submit folder)" >&2
    exit 2
}
if [ -x "$root/.venv/bin/torchrun" ]; then
    torchrun=("$root/.venv/bin/torchrun")
elif command -v torchrun >/dev/null; then
    torchrun=(torchrun)
else
    torchrun=(python3 -m torch.distributed.run)
fi

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
nproc=${NPROC:-$(count_gpus)}
[[ "$nproc" =~ ^[0-9]+$ ]] && [ "$nproc" -ge 1 ] || nproc=1

id=${SLURM_ARRAY_TASK_ID:-${TASK_ID:-0}}
IFS=$'\t' read -r experiment seed frac < <(sed -n "$((id + 1))p" "$task_file") || true
if [ -z "${frac:-}" ]; then
    echo "run_train.sh: no task $id in $task_file" >&2
    exit 2
fi
echo "task $id: $experiment seed $seed frac $frac on $(hostname), $nproc process(es)"
cd "$root"
exec "${torchrun[@]}" --standalone --nproc_per_node="$nproc" -m repr_sim train "$experiment" \
    --seed "$seed" --frac "$frac" "$@"
