"""The triangular learning-rate schedule (docs/protocol.md section 2), per iteration.

The factor rises linearly from 0 at iteration 0 to 1 at the peak iteration, then falls
linearly to 0 at the last iteration (`total`). The learning rate of step `s` (counting
from 0) is `base_lr * factor(s)`, so the very first update uses lr 0, as in the study.

The peak is `peak_epoch * iters_per_epoch`; a run asked for no more epochs than its peak
epoch (a short test run) puts the peak at 20% of training instead (rounded to the nearest
iteration), so the schedule keeps its shape.
"""

from __future__ import annotations

from dataclasses import dataclass

SHORT_RUN_PEAK = 0.2  # where the peak goes when epochs <= peak_epoch


@dataclass(frozen=True)
class Triangular:
    total: int  # iterations of the whole run
    peak: int  # iteration at which the factor is 1

    def __post_init__(self):
        if self.total < 1:
            raise ValueError(f"a schedule needs at least one iteration, got total={self.total}")
        if not 0 <= self.peak <= self.total:
            raise ValueError(f"peak {self.peak} outside [0, {self.total}]")

    def __call__(self, step: int) -> float:
        if step < self.peak:
            return step / self.peak
        if step == self.peak:
            return 1.0
        if step >= self.total:
            return 0.0
        return (self.total - step) / (self.total - self.peak)

    @classmethod
    def from_epochs(cls, epochs: int, iters_per_epoch: int, peak_epoch: float) -> Triangular:
        total = epochs * iters_per_epoch
        if epochs > peak_epoch:
            peak = round(peak_epoch * iters_per_epoch)
        else:
            peak = round(SHORT_RUN_PEAK * total)
        return cls(total=total, peak=peak)
