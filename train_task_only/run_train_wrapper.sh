#!/bin/bash
# Train the label-partition experiment (task overlap alone): one SLURM job array of
# seeds x partitions when SLURM is present, else one task after another on this machine.
# A task is one partition of one seed (`--frac` 0, 0.5, 1 = partitions 1, 2, 3): it trains
# that partition's 2 or 3 ResNet-18s into seed_<S>/frac_<F>/split_<i>/.
#
#   bash run_train_wrapper.sh [EXPERIMENT...]     (default: every experiment in configs/)
#
# Write the data first: python prepare_data.py [--generate] (see its --help).
# Environment: LAUNCHER=slurm|pool|local (pool: WORKERS pairs at once here),
# SEEDS="0 1", FRACS="0.0 0.5", TRAIN_ARGS="--epochs 2",
# SBATCH_ARGS="--cpus-per-task=8", and sbatch's own SBATCH_* variables. Finished pairs are
# skipped; SLURM logs go to log_dir/slurm_out/ here. Details: `reprsim sweep --help`.
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^set -e/{/^#SBATCH/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
reprsim=reprsim
[ -x "$here/../.venv/bin/reprsim" ] && reprsim="$here/../.venv/bin/reprsim"
[ $# -gt 0 ] || set -- "$here"/configs/*.toml
exec "$reprsim" sweep "$@" --sbatch-script "$here/run_train.sh" --log-dir "$here/log_dir"
