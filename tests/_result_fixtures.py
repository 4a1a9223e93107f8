"""Result CSVs for the analysis, plot, summary and notebook tests.

The study's published files live beside the project (`../shared/reference/plotting_results/`,
or wherever REPRSIM_REFERENCE_RESULTS points); tests copy them into a temporary folder and
never write next to the originals. Where they are absent (a user's clone), the tests that
need them are skipped with that reason, except in CI (CI set), which has ../shared beside
its clone: there a missing folder fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("REPRSIM_REFERENCE_RESULTS")
                 or REPO.parent / "shared" / "reference" / "plotting_results")
METRICS8 = ("cycle_knn", "mutual_knn", "lcs_knn", "cka", "unbiased_cka", "cknna", "svcca",
            "edit_distance_knn")


def reference_files() -> list[Path]:
    return sorted(REFERENCE.glob("*.csv")) if REFERENCE.is_dir() else []


needs_reference = pytest.mark.skipif(not reference_files() and not os.environ.get("CI"),
                                     reason=f"published result files not found at {REFERENCE}")


def copy_reference(dst: Path, names: list[str] | None = None) -> list[Path]:
    """Copy (some of) the published files into dst (writable copies)."""
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for src in reference_files():
        if names is None or src.name in names:
            target = dst / src.name
            shutil.copyfile(src, target)
            out.append(target)
    return out


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    """A CSV in the measurement code's format (6 decimals for floats)."""

    def cell(v):
        return f"{v:.6f}" if isinstance(v, float) else str(v)

    lines = [",".join(header)] + [",".join(cell(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def similarity_file(path: Path, fracs, columns: dict[str, list[float]], *,
                    other_metric_value: float = 0.123) -> Path:
    """seed,metric,frac_overlap,<columns>: the given values as the cka rows, plus an
    svcca row per cka row with a constant value (so a fit that mixed metrics would show)."""
    header = ["seed", "metric", "frac_overlap", *columns]
    rows = []
    for i, frac in enumerate(fracs):
        rows.append([i, "cka", float(frac), *(float(columns[c][i]) for c in columns)])
        rows.append([i, "svcca", float(frac), *(other_metric_value for _ in columns)])
    return write_csv(path, header, rows)
