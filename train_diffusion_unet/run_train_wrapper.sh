#!/bin/bash
# Train every (seed, frac) pair of the diffusion UNet experiments (configs/: diffusion_cifar10_ds,
# diffusion_cifar10_task, diffusion_tinyimagenet_ds, tiny_diffusion_ds):
# one SLURM job array per experiment when SLURM is present, else one pair after another on
# this machine. Write the data first: bash run_write_ffcv_data.sh.
#
#   bash run_train_wrapper.sh [EXPERIMENT...]     (default: every experiment in configs/)
#
# Environment: LAUNCHER=slurm|pool|local (pool: WORKERS pairs at once here),
# SEEDS="0 1", FRACS="0.0 0.5", TRAIN_ARGS="--iters 300",
# SBATCH_ARGS="--cpus-per-task=8", and sbatch's own SBATCH_* variables. Finished pairs are
# skipped; SLURM logs go to log_dir/slurm_out/ here. Details: `reprsim sweep --help`.
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^set -e/{/^#SBATCH/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
reprsim=reprsim
[ -x "$here/../.venv/bin/reprsim" ] && reprsim="$here/../.venv/bin/reprsim"
[ $# -gt 0 ] || set -- "$here"/configs/*.toml
exec "$reprsim" sweep "$@" --sbatch-script "$here/run_train.sh" --log-dir "$here/log_dir"
