"""The eight representational-similarity metrics and their null calibration.

    scores.py        the eight scores from shared neighbour lists and kernels (score_all,
                     score, prepare, neighbours, METRICS; docs/protocol.md section 3)
    calibration.py   p-values, thresholds and calibrated scores from permutation nulls
                     (calibrate_all, calibrate_layers, score_layers; section 5)
    cli.py           `reprsim similarity`

Everything public is importable from here: `from repr_sim.metrics import score_all,
calibrate_all`.
"""

from .calibration import (  # noqa: F401
    Calibrated,
    calibrate_all,
    calibrate_layers,
    calibrate_values,
    draw_permutations,
    metric_s_max,
    score_layers,
)
from .scores import *  # noqa: F401,F403
from .scores import (  # noqa: F401  (internals the tests check against float64 formulas)
    _canonical_correlations,
    _hsic_unbiased_lists,
    _Pair,
    _Side,
)
