#!/bin/bash
# The body of the training folders' run_write_ffcv_data.sh, kept once here:
#
#   write_data.sh SCRIPT 'DATASET... [write-data options]'... -- [the user's options]
#
# runs `reprsim write-data DATASET... [write-data options] [the user's options]` once per
# quoted group (split on spaces), from the project folder, so that the default data root
# is its data/. The user's options: --data-root DIR, --download, --workers N (see SCRIPT's
# --help, its header comments); relative paths are made absolute first.
set -euo pipefail
script=${1:?usage: write_data.sh SCRIPT GROUP... -- [options]}
shift
groups=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do groups+=("$1"); shift; done
[ $# -gt 0 ] && shift
name=$(basename "$script")
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

opts=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//p}' "$script"; exit 0 ;;
        --data-root) opts+=(--data-root "$(absolute "${2:?--data-root needs a folder}")"); shift 2 ;;
        --data-root=*) opts+=(--data-root "$(absolute "${1#*=}")"); shift ;;
        --download) opts+=(--download); shift ;;
        --workers) opts+=(--workers "${2:?--workers needs a number}"); shift 2 ;;
        --workers=*) opts+=(--workers "${1#*=}"); shift ;;
        *) echo "$name: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "${REPRSIM_DATA:-}" ] && export REPRSIM_DATA="$(absolute "$REPRSIM_DATA")"

cd "$(dirname "${BASH_SOURCE[0]}")/../.."  # this file is <root>/repr_sim/sh/
reprsim=reprsim
[ -x .venv/bin/reprsim ] && reprsim=.venv/bin/reprsim
for group in "${groups[@]}"; do
    read -r -a args <<<"$group"
    "$reprsim" write-data "${args[@]}" ${opts[@]+"${opts[@]}"}
done
