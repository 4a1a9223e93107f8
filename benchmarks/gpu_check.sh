#!/bin/bash
# The project's GPU check: one prepared run on a GPU machine, one table at the end.
#
#   bash benchmarks/gpu_check.sh [--only SECTIONS] [--budget SECONDS] [--cpu-dry-run] [--out DIR]
#
# Sections, in this order (default: the first seven, whose caps add up to the default 300 s
# budget; the last three as a second call, `--only finetune,diffusion,llm`, caps 270 s):
#   tests      the CUDA tests: pytest -m cuda (4 processes with pytest-xdist)   cap 85 s
#   train      one CIFAR-shaped pair, 2 epochs, per loader backend; then
#              torch.compile at M = 1: compile time apart from images/s        cap 70 s
#   pack       aggregate images/s of M = 1, 2, 4, 8 ResNet-18s on one device   cap 80 s
#   profile    one model's step under torch.profiler (the bottleneck)          cap 20 s
#   metrics    the eight metrics at N = 10,000 and 50,000; calibration K = 200  cap 15 s
#   extract    feature extraction images/s                                      cap 15 s
#   gpt        a GPT training step in bf16                                      cap 15 s
#   finetune   benchmarks/bench_finetune.py --device cuda --quick (if present)  cap 90 s
#   diffusion  benchmarks/bench_diffusion.py --device cuda --quick (if present) cap 90 s
#   llm        benchmarks/bench_llm.py --device cuda --quick (if present)       cap 90 s
# A section may run for its cap plus what the sections before it left unused, as long as
# every later section of the call keeps its cap (and never past the budget); it is killed at
# that limit. Where the budget is short of the caps, a section gets min(its cap, what is
# left), and one that no longer fits (< 10 s) is listed as skipped. --only takes a comma-separated list (any
# of the ten; the per-section details: bench_gpu.py --help).
#
# Environment on the GPU machine: run from the working tree (PYTHONPATH=. is set here),
# python3 with its own torch. Wheels in .whl/ (the repository root; gitignored, carried)
# supply what it lacks (diffusers and the dependencies it lacks): only a wheel whose
# distribution the machine does not have is installed, never torch, torchvision,
# torchaudio, triton, nvidia-*, jax* or cupy*, with pip --no-index --no-deps (nothing is
# fetched or resolved) into /tmp/site ($GPU_CHECK_SITE), which goes on PYTHONPATH.
# --cpu-dry-run: every section on the CPU with tiny sizes, to prove the script works; the
# numbers are then CPU numbers and labelled so; the caps are tripled (budget 900 s) for a
# small shared CPU; no wheel is installed; the tests section hides FFCV, `datasets` and
# calibrated-similarity (REPRSIM_HIDE_PACKAGES, tests/conftest.py), as on the GPU machine.
# Four files go to --out (default: $OUT when set, else gpu_check_out/): table.md, rows.jsonl
# (one JSON line per measured value), status.tsv, sections.log.
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
    # The wheels of distributions the machine lacks; the others are named and left out.
    mapfile -t wheels < <("$py" - .whl/*.whl <<'PY'
import re
import sys
from importlib import metadata

for wheel in sys.argv[1:]:
    name = re.sub(r"[-_.]+", "-", wheel.rsplit("/", 1)[-1].split("-")[0]).lower()
    if re.fullmatch(r"torch|torchvision|torchaudio|triton|nvidia-.*|jax.*|cupy.*", name):
        print(f"wheels: left out {wheel}: the machine's GPU stack is never replaced", file=sys.stderr)
        continue
    try:
        print(f"wheels: left out {wheel}: the machine has {name} {metadata.version(name)}",
              file=sys.stderr)
    except metadata.PackageNotFoundError:
        print(wheel)
PY
    )
    site=${GPU_CHECK_SITE:-/tmp/site}
    if [ ${#wheels[@]} -gt 0 ]; then
        echo "installing ${#wheels[@]} wheel(s) from .whl/ into $site: ${wheels[*]#.whl/}"
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" "${wheels[@]}" && export PYTHONPATH="$PYTHONPATH:$site"
    fi
fi
# Where torch and the packages the wheels supply come from (torch never from the wheels).
"$py" - "${GPU_CHECK_SITE:-/tmp/site}" <<'PY' || exit 2
import importlib.util
import sys
from importlib import metadata

origin = importlib.util.find_spec("torch").origin
print(f"torch {metadata.version('torch')} from {origin}")
assert not origin.startswith(sys.argv[1]), "torch would come from the wheels: refusing"
for name in ("diffusers", "importlib_metadata"):
    spec = importlib.util.find_spec(name)
    print(f"{name} from {spec.origin if spec else '(not importable)'}")
PY

all=(tests train pack profile metrics extract gpt finetune diffusion llm)
declare -A cap=([tests]=85 [train]=70 [pack]=80 [profile]=20 [metrics]=15 [extract]=15 [gpt]=15
                [finetune]=90 [diffusion]=90 [llm]=90)
if [ -n "$only" ]; then
    IFS=, read -r -a chosen <<<"$only"
    for s in "${chosen[@]}"; do
        [ -n "${cap[$s]:-}" ] || { echo "gpu_check.sh: unknown section $s (known: ${all[*]})" >&2; exit 2; }
    done
else
    chosen=("${all[@]:0:7}")  # the last three: a second call (see above)
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

scale=1
[ "$dry" = 1 ] && scale=3
for i in "${!chosen[@]}"; do
    s=${chosen[$i]}
    left=$((budget - ($(date +%s) - started)))
    reserve=0  # the caps of the sections after this one
    for later in "${chosen[@]:$((i + 1))}"; do reserve=$((reserve + scale * ${cap[$later]})); done
    limit=$((scale * ${cap[$s]}))
    [ "$left" -lt "$limit" ] && limit=$left
    [ $((left - reserve)) -gt "$limit" ] && limit=$((left - reserve))
    if [ "$limit" -lt 10 ]; then
        printf '%s\tskipped: budget spent\t0\n' "$s" >>"$status"
        continue
    fi
    case "$s" in
        tests)  # every `cuda`-marked test; one line per test as it ends (-v), so a kill
                # still shows which ran; without a GPU (dry run) they are collected and skip
            xdist=()
            "$py" -c 'import xdist' 2>/dev/null && xdist=(-n 4 --dist loadfile)
            hide=()
            [ "$dry" = 1 ] && hide=(REPRSIM_HIDE_PACKAGES=ffcv,datasets,calibrated_similarity)
            run_section tests "$limit" env "${hide[@]}" "$py" -m pytest -v -rfEs \
                -p no:cacheprovider --continue-on-collection-errors --durations=8 \
                "${xdist[@]}" -m cuda tests/ ;;
        train | pack | profile | metrics | extract | gpt)
            run_section "$s" "$limit" "$py" benchmarks/bench_gpu.py "$s" --out "$rows" \
                --limit "$limit" "${dev[@]}" ;;
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
