"""Measurement of one text pair (docs/protocol.md section 3), for repr_sim.measure (kind "text").

Models: `split_<i>/ckpt.pt` through repr_sim.models.gpt.load_checkpoint (weights_only=True;
a checkpoint of another architecture is refused with a line naming the file), eval mode.
Features: the last hidden state after the final layer norm, mean-pooled over the block
(repr_sim.features.text_features), of both models on the same windows, batch by batch;
bf16 autocast on CUDA when the run trained in bf16, features cast to float32.

Probe sets: random windows of `block_size` tokens (the run's config) from the prepared
`val.bin` streams of the config's `[probes] corpora` (default: the experiment's corpora),
`--probe-size N` windows per set (default the study's 20,500 = 82 batches of 250), drawn
with replacement from a generator seeded by the set's corpora, so every pair of an
experiment sees the same windows (the study's were unseeded). A window of a set with
several corpora first picks one of them uniformly (repr_sim.data.text.MixedWindows).
- dataset split: one set per probe corpus, column metric_<corpus> (shakespeare_all ->
  metric_shakespeare), in config order;
- task split: metric_common = the probe corpora both models trained on,
  metric_OOD_for_one = those only one trained on, metric_OOD_for_all = those neither
  trained on; an empty group gives -1.
A val stream shorter than one window makes its set -1, with a warning naming the corpus.

Loss file: each model's best validation loss, the one recorded in its kept checkpoint.
"""

from __future__ import annotations

import contextlib
import zlib
from pathlib import Path

import numpy as np
import torch

from ... import features, results, splits
from ...errors import UserError
from ...scoring import (
    PROBE_SEED,
    SkipPair,
    pair_label,
    per_model_rows,
    score_probes,
    similarity_rows,
    warn,
)

SIM_CSV = results.TEXT_SIM_CSV
LOSS_CSV = results.TEXT_LOSS_CSV
TASK_COLUMNS = results.TEXT_TASK_PROBES
# The study's column names for corpora whose name is longer than the column's.
COLUMN_NAMES = {"shakespeare_all": "shakespeare"}


def _cfg(args: dict) -> dict:
    return args["config"]


def is_task(args: dict) -> bool:
    return _cfg(args)["split"] == "task"


def probe_corpora(cfg: dict) -> list[str]:
    from ...data import text as textdata
    from .train import corpora_of

    names = cfg.get("probes", {}).get("corpora") or corpora_of(cfg)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{cfg.get('config_path', cfg.get('name'))}: probes.corpora must be a list of corpus names")
    for name in names:
        textdata.get_corpus(name)  # an unknown name is one clear line
    return list(names)


def dataset_column(corpus: str) -> str:
    return f"metric_{COLUMN_NAMES.get(corpus, corpus)}"


def probe_columns(args: dict) -> list[str]:
    if is_task(args):
        return list(TASK_COLUMNS)
    return [dataset_column(c) for c in probe_corpora(_cfg(args))]


def csv_files(args: dict) -> dict[str, list[str]]:
    return {SIM_CSV: results.similarity_header(probe_columns(args)),
            LOSS_CSV: list(results.LOSS_COLUMNS)}


def sidecar(args: dict) -> dict:
    cfg = _cfg(args)
    return {"arch": "gpt", "dataset": "all" if is_task(args) else cfg["corpus"],
            "kind": "task" if is_task(args) else "ds"}


def checkpoint_paths(pair_dir: Path) -> list[Path]:
    from .train import CHECKPOINT

    return [Path(pair_dir) / f"split_{i}" / CHECKPOINT for i in (0, 1)]


def inputs(pair_dir: Path, args: dict) -> list[Path]:
    return checkpoint_paths(pair_dir)


def probe_groups(args: dict, split) -> dict[str, list[str]]:
    """{column: the probe corpora its windows come from}, in column order."""
    probes = probe_corpora(_cfg(args))
    if not is_task(args):
        return {dataset_column(c): [c] for c in probes}
    a, b = set(split.a), set(split.b)
    return {
        "metric_common": [c for c in probes if c in a and c in b],
        "metric_OOD_for_one": [c for c in probes if (c in a) != (c in b)],
        "metric_OOD_for_all": [c for c in probes if c not in a and c not in b],
    }


def probe_windows(cache: dict, corpora: list[str], length: int, n: int, where: str,
                  column: str) -> np.ndarray | None:
    """[n, length] int64 windows of the group's val streams (cached); None if too short."""
    from ...data import text as textdata
    from ...paths import data_root

    key = ("text_windows", str(data_root()), tuple(corpora), int(length), int(n))
    if key in cache:
        return cache[key]
    samplers = []
    for corpus in corpora:
        stream = textdata.load_stream(corpus, "val")
        if len(stream) < length:
            warn(f"{where}: {corpus} val stream has {len(stream)} tokens, fewer than one window of "
                 f"{length}: {column} is -1")
            cache[key] = None
            return None
        samplers.append(textdata.TokenWindows(stream, None, length))
    rng = np.random.default_rng([PROBE_SEED, zlib.crc32("|".join(corpora).encode("utf-8")), n])
    cache[key] = textdata.MixedWindows(samplers).windows(rng, n)
    return cache[key]


def _autocast(cfg: dict, device: str):
    from .train import recipe

    if device.startswith("cuda") and recipe(cfg)["dtype"] == "bfloat16":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def extract(pair, windows: np.ndarray, *, batch_size: int, device: str, cfg: dict) -> list[torch.Tensor]:
    """Mean-pooled features [n, n_embd] of each model on the same windows, batch by batch."""
    out: list[list[torch.Tensor]] = [[] for _ in pair]
    with torch.no_grad(), _autocast(cfg, device):
        for start in range(0, len(windows), batch_size):
            idx = torch.from_numpy(windows[start:start + batch_size]).to(device)
            for model, acc in zip(pair, out, strict=True):
                acc.append(features.text_features(model, idx).float())
    return [torch.cat(parts) for parts in out]


def load_pair(pair_dir: Path, device: str, block: int):
    from ...models import gpt

    paths = checkpoint_paths(pair_dir)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SkipPair(f"missing checkpoint{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    loaded = [gpt.load_checkpoint(p, map_location=device) for p in paths]
    for path, (model, ckpt) in zip(paths, loaded, strict=True):
        if model.config.block_size < block:
            raise UserError(f"{path}: block size {model.config.block_size} is shorter than the "
                            f"run's {block}")
        if not isinstance(ckpt.get("best_val_loss"), int | float):
            raise UserError(f"{path}: records no best_val_loss")
    return loaded


def measure_pair(pair_dir: Path, args: dict, opts, cache: dict) -> dict[str, list[list[str]]]:
    pair_dir = Path(pair_dir)
    where = pair_label(pair_dir)
    cfg = _cfg(args)
    block = int(cfg["model"]["block_size"])
    split = splits.load(pair_dir / "split_indices")
    loaded = load_pair(pair_dir, opts.device, block)
    pair = [model for model, _ in loaded]
    feats = {}
    for column, corpora in probe_groups(args, split).items():
        windows = probe_windows(cache, corpora, block, opts.probe_size, where, column) if corpora else None
        feats[column] = ([None, None] if windows is None else  # an empty set: -1 everywhere
                         extract(pair, windows, batch_size=opts.batch_size, device=opts.device, cfg=cfg))
    scores = score_probes(feats, probe_columns(args), pair_dir=pair_dir, where=where, opts=opts)
    seed, overlap = int(args["seed"]), float(split.overlap)
    return {SIM_CSV: similarity_rows(seed, overlap, scores),
            LOSS_CSV: per_model_rows(seed, overlap, [ckpt["best_val_loss"] for _, ckpt in loaded])}
