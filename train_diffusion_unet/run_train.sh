#!/bin/bash
# One task of a diffusion UNet training sweep (one pair): the body of the SLURM job array that
# `reprsim sweep` (run_train_wrapper.sh) submits.
#
#   run_train.sh TASKFILE [reprsim train options...]
#
# The task is line SLURM_ARRAY_TASK_ID (0-based; TASK_ID when run by hand) of TASKFILE,
# "experiment<TAB>seed<TAB>frac"; it runs `reprsim train EXPERIMENT --seed S --frac F`
# with the options given after TASKFILE (the sweep passes $TRAIN_ARGS there).
# Resources are the defaults below (this project's estimate); change them the SLURM way,
# with sbatch's input variables (SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_GRES,
# SBATCH_MEM_PER_NODE, SBATCH_TIMELIMIT, ...) or SBATCH_ARGS="--cpus-per-task=8".
#SBATCH --job-name=reprsim_diffusion
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
set -euo pipefail
# The body is repr_sim/sh/train_task.sh, found upward from this file or, under sbatch (which
# runs a spooled copy of this file), from the folder the job was submitted from.
up() { local d; d=$(cd "$1" 2>/dev/null && pwd) || return 1
       while [ ! -f "$d/repr_sim/sh/train_task.sh" ]; do [ "$d" = / ] && return 1; d=$(dirname "$d"); done; echo "$d"; }
root=$(up "$(dirname "${BASH_SOURCE[0]}")" || up "${SLURM_SUBMIT_DIR:-.}") || {
    echo "run_train.sh: cannot find the project (repr_sim/sh/train_task.sh above this script or the submit folder)" >&2
    exit 2
}
exec bash "$root/repr_sim/sh/train_task.sh" "$0" "$@"
