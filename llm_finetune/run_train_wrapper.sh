#!/bin/bash
# Train the LLM sweeps: LoRA fine-tunes of Llama-3.2 1B/3B/11B-Vision on dataset overlap
# (tiny-codes chunks) and task overlap (the six corpora). One SLURM job array per
# experiment when SLURM is present (each task runs run_train.sh: torchrun on the
# allocation's GPUs), else one pair after another on this machine (LAUNCHER=local).
#
#   bash run_train_wrapper.sh [EXPERIMENT...] [reprsim sweep options, e.g. --dry-run]
#       (default: the six llm_llama_{1b,3b,11b}_{ds,task}; tiny_llm_task / tiny_llm_ds
#       run anywhere)
#
# An experiment is a config name in configs/ (or a path to a .toml). Prepare the data
# first: bash run_write_data.sh (or --tiny). Environment: LAUNCHER=slurm|pool|local,
# SEEDS="0 1", FRACS="0.0 1.0", TRAIN_ARGS="--iters 500", SBATCH_ARGS="--gres=gpu:4",
# and sbatch's own SBATCH_* variables. Finished pairs are skipped; a killed pair resumes
# from its last saved step. Details: `reprsim sweep --help`.
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
reprsim=reprsim
[ -x "$here/../.venv/bin/reprsim" ] && reprsim="$here/../.venv/bin/reprsim"
# Configs live in configs/ here (not a train_* folder): names become paths.
args=()
named=0
for arg in "$@"; do
    case "$arg" in
        -*) args+=("$arg") ;;
        *.toml) args+=("$arg"); named=1 ;;
        *) if [ -f "$here/configs/$arg.toml" ]; then args+=("$here/configs/$arg.toml"); else args+=("$arg"); fi
           named=1 ;;
    esac
done
if [ "$named" = 0 ]; then
    for exp in llm_llama_1b_ds llm_llama_1b_task llm_llama_3b_ds llm_llama_3b_task \
               llm_llama_11b_ds llm_llama_11b_task; do
        args=("$here/configs/$exp.toml" "${args[@]}")
    done
fi
exec "$reprsim" sweep "${args[@]}" --sbatch-script "$here/run_train.sh" --log-dir "$here/log_dir"
