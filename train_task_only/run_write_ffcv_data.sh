#!/usr/bin/env bash
# Write the betons of the label-partition experiment: the same as prepare_data.py
# (ColorShapeDigit800k train/val, and the 28x28 probes cifar10_28, mnist_28, svhn_28,
# digit_only, shape_only). Options are prepare_data.py's, e.g. --generate, --data-root DIR,
# --download; see `bash run_write_ffcv_data.sh --help`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=python3
[ -x "$here/../.venv/bin/python" ] && python="$here/../.venv/bin/python"
exec "$python" "$here/prepare_data.py" "$@"
