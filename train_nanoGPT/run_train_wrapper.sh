#!/bin/bash
# Train the study's three nanoGPT sweeps: dataset overlap on shakespeare_all and on
# tinystories, task overlap over the six corpora. One SLURM job array per experiment when
# SLURM is present (each task runs run_train.sh: torchrun on the allocation's GPUs), else
# one pair after another on this machine (LAUNCHER=local).
#
#   bash run_train_wrapper.sh [EXPERIMENT...] [reprsim sweep options, e.g. --dry-run]
#       (default: nanogpt_shakespeare_ds nanogpt_tinystories_ds nanogpt_task)
#
# Prepare the corpora first: python data/<corpus>/prepare.py (or reprsim prepare-text).
# Environment: LAUNCHER=slurm|pool|local (pool: WORKERS pairs at once here),
# SEEDS="0 1", FRACS="0.0 0.2", TRAIN_ARGS="--iters 500",
# SBATCH_ARGS="--gres=gpu:4", and sbatch's own SBATCH_* variables. Finished pairs are
# skipped; SLURM logs go to log_dir/slurm_out/ here. Details: `reprsim sweep --help`.
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^set -e/{/^#SBATCH/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
reprsim=reprsim
[ -x "$here/../.venv/bin/reprsim" ] && reprsim="$here/../.venv/bin/reprsim"
# No experiment named (only options such as --dry-run): the study's three.
named=0
for arg in "$@"; do case "$arg" in -*) ;; *) named=1 ;; esac; done
[ "$named" = 1 ] || set -- nanogpt_shakespeare_ds nanogpt_tinystories_ds nanogpt_task "$@"
exec "$reprsim" sweep "$@" --sbatch-script "$here/run_train.sh" --log-dir "$here/log_dir"
