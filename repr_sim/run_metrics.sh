#!/bin/bash
# Measure trained sweeps: `reprsim measure` over experiment folders (docs/protocol.md section 3),
# writing platonic_ffcv.csv / platonic_acc_ffcv.csv (images) or platonic.csv /
# platonic_loss.csv (text) into each experiment folder.
#
#   sbatch run_metrics.sh [FOLDER...] [-- MEASURE_OPTIONS...]     (inside repr_sim/)
#   bash repr_sim/run_metrics.sh [FOLDER...] [-- MEASURE_OPTIONS...]
#
# FOLDER: an experiment folder ($REPRSIM_RUNS/<experiment>, with seed_*/frac_* pairs), or
# a root holding experiment folders (every one of them is measured). Default: the runs
# root, $REPRSIM_RUNS, else runs/ in the project. All folders go to ONE `reprsim measure`
# call; finished pairs with a result are kept, unfinished ones skipped, so the script can
# be run again while a sweep trains. Options for `reprsim measure` (--probe-size N,
# --batch-size N, --device cpu|cuda, --force, --save-features, --workers N): after `--`,
# or in MEASURE_ARGS="--probe-size 1000" (split on spaces).
#
# Resources: one GPU, 8 CPUs, 32 GB, 12 hours (this script's #SBATCH lines); change them
# the SLURM way, on sbatch's command line (sbatch --time=2:00:00 run_metrics.sh) or with
# its input variables (SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_GRES, SBATCH_TIMELIMIT,
# SBATCH_MEM_PER_NODE, ...; SBATCH_GRES=none on a cluster without GPUs, with
# MEASURE_ARGS="--device cpu"). Output goes where sbatch puts it (slurm-<job>.out).
# Without SLURM it runs as it is, with bash. It uses the project's .venv when there is
# one, else `reprsim` on the PATH.
#SBATCH --job-name=reprsim_measure
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=12:00:00
set -euo pipefail
case "${1:-}" in -h | --help) sed -n '2,/^set -e/{/^#SBATCH/d;/^set -e/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;; esac

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
# Under sbatch this file runs from a spooled copy: the project is found from the folder
# the job was submitted from; run with bash, from this file's own folder.
here=$(dirname "${BASH_SOURCE[0]}")
if [ -n "${SLURM_JOB_ID:-}" ] && [ -n "${SLURM_SUBMIT_DIR:-}" ]; then
    root=$(find_root "$SLURM_SUBMIT_DIR" || find_root "$here") || root=
else
    root=$(find_root "$here" || find_root "${SLURM_SUBMIT_DIR:-.}") || root=
fi
reprsim=reprsim
[ -n "$root" ] && [ -x "$root/.venv/bin/reprsim" ] && reprsim="$root/.venv/bin/reprsim"
if ! command -v "$reprsim" >/dev/null 2>&1; then
    echo "run_metrics.sh: cannot find reprsim (no project .venv above this script or the submit folder, none on the PATH)" >&2
    exit 2
fi

# The folders (experiment folders, or roots holding them; none: the runs root) and the
# options after `--` go to one `reprsim measure --below` call, which finds the experiments.
folders=()
while [ $# -gt 0 ]; do
    [ "$1" = -- ] && { shift; break; }
    folders+=("$1")
    shift
done
if [ ${#folders[@]} -eq 0 ] && [ -z "${REPRSIM_RUNS:-}" ] && [ -n "$root" ]; then
    folders=("$root/runs")
fi
read -r -a extra <<<"${MEASURE_ARGS:-}"
echo "run_metrics.sh: project ${root:-unknown}, $reprsim; on $(hostname)"
exec "$reprsim" measure --below "${folders[@]}" "$@" "${extra[@]}"
