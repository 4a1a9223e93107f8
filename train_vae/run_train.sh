#!/bin/bash
# One task of a VAE training sweep (one pair): the body of the SLURM job array that
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
#SBATCH --job-name=reprsim_vae
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=6:00:00
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
reprsim=reprsim
[ -x "$root/.venv/bin/reprsim" ] && reprsim="$root/.venv/bin/reprsim"

id=${SLURM_ARRAY_TASK_ID:-${TASK_ID:-0}}
IFS=$'\t' read -r experiment seed frac < <(sed -n "$((id + 1))p" "$task_file") || true
if [ -z "${frac:-}" ]; then
    echo "run_train.sh: no task $id in $task_file" >&2
    exit 2
fi
echo "task $id: $experiment seed $seed frac $frac on $(hostname)"
exec "$reprsim" train "$experiment" --seed "$seed" --frac "$frac" "$@"
