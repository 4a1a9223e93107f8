"""`reprsim similarity`: two feature files -> the eight scores (JSON), or with --calibrate
their null-calibrated table (repr_sim.metrics.calibration)."""

from __future__ import annotations

import json
import math
import sys

from ..errors import UserError
from . import calibration
from .scores import METRICS, _check_metrics, load_features, prepare, score_all


def cli_similarity(args) -> int:
    a = load_features(args.a)
    b = load_features(args.b)
    if a.shape[0] != b.shape[0]:
        raise UserError(f"{args.a} and {args.b} have different numbers of rows: "
                        f"{a.shape[0]} and {b.shape[0]}")
    names = _check_metrics(args.metrics if args.metrics else METRICS)
    topks = args.topk if isinstance(args.topk, list) else [args.topk]
    if args.calibrate:
        return calibration.cli_calibrate(args, a, b, names, topks)
    if len(topks) > 1:
        raise UserError("several --topk values need --calibrate")
    if not args.no_prepare:
        a, b = prepare(a), prepare(b)
    result = score_all(a, b, metrics=names, topk=topks[0])
    # JSON has no NaN: a value that does not exist is written as null
    clean = {k: (None if math.isnan(v) else v) for k, v in result.items()}
    sys.stdout.write(json.dumps(clean) + "\n")
    sys.stdout.flush()
    return 0
