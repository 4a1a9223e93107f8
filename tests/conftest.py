"""Shared test set-up: offline, headless, every test in its own data and runs roots."""

import os

# Set before anything imports datasets / huggingface_hub / matplotlib.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


requires_cuda = pytest.mark.skipif(not cuda_available(), reason="no CUDA device on this machine")


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
