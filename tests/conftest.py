"""Shared test set-up: offline, headless, every test in its own data and runs roots.

CUDA tests: decorate them with `requires_cuda` (from conftest import requires_cuda), which
marks them `cuda` (`pytest -m cuda` selects exactly them; the GPU check runs that) and skips
them without a CUDA device; a test marked only `@pytest.mark.cuda` is skipped the same way,
before its fixtures are set up. They must run on a machine with torch and CUDA but without
FFCV, Hugging Face `datasets` or `calibrated-similarity` (the GPU check's): a test needs
such a package only through `pytest.importorskip` inside the test, never at module import.

REPRSIM_HIDE_PACKAGES=ffcv,datasets,calibrated_similarity (module names, comma-separated)
makes those packages unimportable in the test process (and pytest-xdist's workers; not in
other subprocesses a test starts), as on a machine without them: an `import` of them, or of
a submodule, raises ModuleNotFoundError.
"""

import functools
import os
import sys

# Set before anything imports datasets / huggingface_hub / matplotlib.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")


def hide_packages(names, modules=None) -> None:
    """Make `import NAME` and `import NAME.sub` fail as where NAME is not installed."""
    modules = sys.modules if modules is None else modules
    for name in names:
        for key in [k for k in list(modules) if k == name or k.startswith(name + ".")]:
            modules[key] = None
        modules[name] = None


hide_packages([n.strip() for n in os.environ.get("REPRSIM_HIDE_PACKAGES", "").split(",") if n.strip()])

import pytest  # noqa: E402


@functools.cache
def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


NO_CUDA = "no CUDA device on this machine"
_skip_without_cuda = pytest.mark.skipif(not cuda_available(), reason=NO_CUDA)


def requires_cuda(test):
    """Mark a test `cuda` and skip it without a CUDA device."""
    return pytest.mark.cuda(_skip_without_cuda(test))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """A `cuda`-marked test without a CUDA device: skipped before any fixture is set up."""
    if item.get_closest_marker("cuda") is not None and not cuda_available():
        pytest.skip(NO_CUDA)


@pytest.fixture
def reprsim_env(tmp_path, monkeypatch):
    """REPRSIM_DATA and REPRSIM_RUNS in a temporary folder; checksums off (synthetic files)."""
    data, runs = tmp_path / "data", tmp_path / "runs"
    data.mkdir()
    runs.mkdir()
    monkeypatch.setenv("REPRSIM_DATA", str(data))
    monkeypatch.setenv("REPRSIM_RUNS", str(runs))
    monkeypatch.setenv("REPRSIM_VERIFY", "0")
    return tmp_path


# A real one-node SLURM cluster (session-scoped `slurm_cluster`), and its logs attached to the
# report of a failed test that used it; see tests/slurm_cluster.py.
from slurm_cluster import pytest_runtest_makereport, slurm_cluster  # noqa: E402, F401
