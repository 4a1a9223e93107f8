#!/bin/bash
# One task of an LLM training sweep: the body of the SLURM job array that `reprsim sweep`
# (run_train_wrapper.sh) submits.
#
#   run_train.sh TASKFILE [reprsim train options...]
#
# The task is line SLURM_ARRAY_TASK_ID (0-based; TASK_ID when run by hand) of TASKFILE,
# "experiment<TAB>seed<TAB>frac". It starts
#   torchrun --standalone --nproc_per_node=<GPUs of the allocation, 1 if none> \
#       -m repr_sim train EXPERIMENT --seed S --frac F [options]
# so a multi-GPU allocation shares each model's 32 sequences per step among its GPUs (the
# split depends on the seed only). GPUs are counted from SLURM_GPUS_ON_NODE, else
# CUDA_VISIBLE_DEVICES, else (outside a SLURM job only) nvidia-smi; NPROC=N overrides.
# The base model must be in the HF cache (HF_HUB_OFFLINE=1 on compute nodes) or a folder.
# Resources are the defaults below (1B; give 3B/11B more memory); change them the SLURM
# way (SBATCH_GRES=gpu:4, SBATCH_MEM_PER_NODE, SBATCH_TIMELIMIT, ...) or with SBATCH_ARGS.
#SBATCH --job-name=reprsim_llm
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=24:00:00
set -euo pipefail
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
# The body is repr_sim/sh/train_task.sh, found upward from this file or, under sbatch (which
# runs a spooled copy of this file), from the folder the job was submitted from.
up() { local d; d=$(cd "$1" 2>/dev/null && pwd) || return 1
       while [ ! -f "$d/repr_sim/sh/train_task.sh" ]; do [ "$d" = / ] && return 1; d=$(dirname "$d"); done; echo "$d"; }
root=$(up "$(dirname "${BASH_SOURCE[0]}")" || up "${SLURM_SUBMIT_DIR:-.}") || {
    echo "run_train.sh: cannot find the project (repr_sim/sh/train_task.sh above this script or the submit folder)" >&2
    exit 2
}
exec bash "$root/repr_sim/sh/train_task.sh" --torchrun "$0" "$@"
