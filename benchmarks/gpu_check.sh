#!/bin/bash
# The project's GPU check: one prepared run on a GPU machine, one table at the end.
#
#   bash benchmarks/gpu_check.sh [--only SECTIONS] [--budget SECONDS] [--cpu-dry-run] [--out DIR]
#
# Sections, in this order (default: all of them, inside --budget, default 300 s):
#   tests      the CUDA tests (tests named *cuda* or marked `cuda`)           cap 50 s
#   train      one CIFAR-shaped pair, 2 epochs, per loader backend             cap 40 s
#   pack       aggregate images/s of M = 1, 2, 4, 8 ResNet-18s on one device   cap 90 s
#   profile    one model's step under torch.profiler (the bottleneck)          cap 20 s
#   metrics    the eight metrics at N = 10,000 and 50,000; calibration K = 200  cap 45 s
#   extract    feature extraction images/s                                      cap 20 s
#   gpt        a GPT training step in bf16                                      cap 25 s
#   finetune   benchmarks/bench_finetune.py --device cuda --quick (if present)  cap 60 s
#   diffusion  benchmarks/bench_diffusion.py --device cuda --quick (if present) cap 60 s
#   llm        benchmarks/bench_llm.py --device cuda --quick (if present)       cap 60 s
# A section gets min(its cap, what is left of the budget) and is killed at that limit; a
# section that no longer fits is listed as skipped. --only takes a comma-separated list. The
# core sections fit the default 300 s; the last three then usually do not: run them as a
# second call, `--only finetune,diffusion,llm` (the per-section details: bench_gpu.py --help).
#
# Environment on the GPU machine: run from the working tree (PYTHONPATH=. is set here),
# python3 with its own torch; wheels for what it lacks (diffusers, ...) are installed from
# .whl/ in the repository root when that folder exists (pip --no-index --target /tmp/site,
# put on the path after the machine's own packages).
# --cpu-dry-run: every section on the CPU with tiny sizes, to prove the script works; the
# numbers are then CPU numbers and labelled so; the caps are tripled (budget 900 s) for a
# small shared CPU. Four files go to --out (default: $OUT when set, else gpu_check_out/):
# table.md, rows.jsonl (one JSON line per measured value), status.tsv, sections.log.
set -uo pipefail

only="" budget="" dry=0 out="${OUT:-gpu_check_out}"
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help) sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        --only) only=${2:?--only needs a list}; shift 2 ;;
        --only=*) only=${1#--only=}; shift ;;
        --budget) budget=${2:?--budget needs seconds}; shift 2 ;;
        --cpu-dry-run) dry=1; shift ;;
        --out) out=${2:?--out needs a folder}; shift 2 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$budget" ] || { [ "$dry" = 1 ] && budget=900 || budget=300; }
[[ "$budget" =~ ^[0-9]+$ ]] || { echo "gpu_check.sh: --budget must be whole seconds" >&2; exit 2; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1 \
    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg
if [ -n "${PYTHON:-}" ]; then
    py=$PYTHON
elif [ "$dry" = 1 ] && [ -x .venv/bin/python ]; then
    py=.venv/bin/python
else
    py=python3
fi
if [ "$dry" = 0 ] && compgen -G ".whl/*.whl" >/dev/null; then
    echo "installing $(ls .whl/*.whl | wc -l) wheel(s) from .whl/ into /tmp/site"
    if "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl; then
        # After the machine's own packages (a .pth in its site-packages is read last), so a
        # wheel only adds what is missing; PYTHONPATH (read first) where that is not writable.
        site=$("$py" -c 'import site; print(site.getsitepackages()[0])')
        echo /tmp/site 2>/dev/null >"$site/zz_gpu_check_wheels.pth" ||
            export PYTHONPATH="$PYTHONPATH:/tmp/site"
    fi
fi

all=(tests train pack profile metrics extract gpt finetune diffusion llm)
declare -A cap=([tests]=50 [train]=40 [pack]=90 [profile]=20 [metrics]=45 [extract]=20 [gpt]=25
                [finetune]=60 [diffusion]=60 [llm]=60)
if [ -n "$only" ]; then
    IFS=, read -r -a chosen <<<"$only"
    for s in "${chosen[@]}"; do
        [ -n "${cap[$s]:-}" ] || { echo "gpu_check.sh: unknown section $s (known: ${all[*]})" >&2; exit 2; }
    done
else
    chosen=("${all[@]}")
fi

mkdir -p "$out"
logs=$(mktemp -d)  # one log per section; joined into $out/sections.log at the end
rows="$out/rows.jsonl" status="$out/status.tsv"
: >"$rows"
: >"$status"
dev=(--device cuda)
[ "$dry" = 1 ] && dev=(--cpu-dry-run)
started=$(date +%s)

run_section() {  # name, limit, command...
    local name=$1 limit=$2; shift 2
    local t0 rc
    t0=$(date +%s)
    echo "== $name (limit ${limit} s): $*"
    timeout -k 5 "$limit" "$@" >"$logs/$name.log" 2>&1
    rc=$?
    tail -n 15 "$logs/$name.log"
    local state=ok
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && state="killed at ${limit} s"
    [ $rc -ne 0 ] && [ "$state" = ok ] && state="failed (exit $rc)"
    printf '%s\t%s\t%s\n' "$name" "$state" "$(($(date +%s) - t0))" >>"$status"
}

for s in "${chosen[@]}"; do
    left=$((budget - ($(date +%s) - started)))
    limit=${cap[$s]}
    [ "$dry" = 1 ] && limit=$((3 * limit))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        printf '%s\tskipped: budget spent\t0\n' "$s" >>"$status"
        continue
    fi
    case "$s" in
        tests)
            if [ "$dry" = 1 ]; then  # no GPU: collect them (they skip), one CPU test runs
                run_section tests "$limit" "$py" -m pytest -q -p no:cacheprovider -k cuda \
                    tests/test_gpu_loader.py tests/test_metrics.py tests/test_calibration.py
            else
                run_section tests "$limit" "$py" -m pytest -q -p no:cacheprovider -rs \
                    --continue-on-collection-errors -k cuda tests/
            fi ;;
        train | pack | profile | metrics | extract | gpt)
            run_section "$s" "$limit" "$py" benchmarks/bench_gpu.py "$s" --out "$rows" "${dev[@]}" ;;
        finetune | diffusion | llm)
            script=benchmarks/bench_$s.py
            if [ -f "$script" ]; then
                if [ "$dry" = 1 ]; then
                    run_section "$s" "$limit" "$py" "$script" --device cpu --quick
                else
                    run_section "$s" "$limit" "$py" "$script" --device cuda --quick
                fi
            else
                printf '%s\tnot present (%s)\t0\n' "$s" "$script" >>"$status"
            fi ;;
    esac
done

{
    echo
    if [ "$dry" = 1 ]; then
        echo "GPU check, CPU DRY RUN (tiny sizes; CPU numbers, not GPU ones), $(date -u '+%Y-%m-%d %H:%M UTC')"
    else
        echo "GPU check on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), $(date -u '+%Y-%m-%d %H:%M UTC')"
    fi
    echo
    echo "| section | state | seconds |"
    echo "| --- | --- | --- |"
    while IFS=$'\t' read -r name state secs; do
        echo "| $name | $state | $secs |"
    done <"$status"
    echo
    "$py" benchmarks/bench_gpu.py table "$rows"
    for s in finetune diffusion llm; do  # their own tables, from their logs
        if [ -f "$logs/$s.log" ] && grep -q '^|' "$logs/$s.log"; then
            echo
            echo "$s (benchmarks/bench_$s.py --quick):"
            echo
            grep '^|' "$logs/$s.log"
        fi
    done
    echo
    echo "total $(($(date +%s) - started)) s; section logs in $out/sections.log"
} | tee "$out/table.md"
for s in "${chosen[@]}"; do
    [ -f "$logs/$s.log" ] && { echo "===== $s"; cat "$logs/$s.log"; }
done >"$out/sections.log"
rm -rf "$logs"
grep -qv $'\tok\t\|\tnot present\|\tskipped' "$status" && exit 1
exit 0
