#!/bin/bash
# Fine-tune every (seed, frac) pair of this folder's experiments: one SLURM job array per
# experiment when SLURM is present, else one pair after another on this machine.
#
#   bash run_train_wrapper.sh [EXPERIMENT...]     (default: every experiment in configs/
#                                                   except the tiny ones)
#
# EXPERIMENT is a config name of configs/ (e.g. cifar100_resnet18_ds, tiny_finetune_ds) or
# a path. Environment: LAUNCHER=slurm|pool|local (pool: WORKERS pairs at once here),
# SEEDS="0 1", FRACS="0.0 0.4", TRAIN_ARGS="--epochs 2",
# SBATCH_ARGS="--cpus-per-task=8", and sbatch's own SBATCH_* variables. Finished pairs are
# skipped; SLURM logs go to log_dir/slurm_out/ here. Details: `reprsim sweep --help`.
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^set -e/{/^#SBATCH/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
reprsim=reprsim
[ -x "$here/../.venv/bin/reprsim" ] && reprsim="$here/../.venv/bin/reprsim"
experiments=()
if [ $# -eq 0 ]; then
    for cfg in "$here"/configs/*.toml; do
        case "$(basename "$cfg")" in tiny_*) ;; *) experiments+=("$cfg") ;; esac
    done
fi
for arg in "$@"; do
    # this folder's configs by path (so a name here never means another folder's config)
    if [ -f "$here/configs/$arg.toml" ]; then experiments+=("$here/configs/$arg.toml")
    else experiments+=("$arg"); fi
done
exec "$reprsim" sweep "${experiments[@]}" --sbatch-script "$here/run_train.sh" --log-dir "$here/log_dir"
