"""Measurement of one LLM pair (docs/protocol.md section 6.5), for repr_sim.measure (kind "llm").

Models: ONE base model (float32, or `probes.dtype = "bfloat16"`: bf16 autocast on CUDA with
the pooling in float32) with both adapters loaded (PEFT, unmerged, eval mode); the features of
model i are taken with adapter i active, so an 11B base is never held twice. The base stays
in the measure call's cache across pairs (same folder, dtype and device); each pair's two
adapters replace the previous pair's.

Feature: the final norm's output mean-pooled over the `block_size` positions of a window of
raw tokens (no BOS, no padding); both models see the same windows. `probes.per_block = true`
also saves each decoder block's mean-pooled output, as float32 .npy files under
`<pair>/features/blocks/` (`<column>_model<i>_block<j>.npy`), for layer-wise calibration.

Probe windows (seeded, unlike the study's): uniform windows of the val streams, drawn with an
RNG seeded by (PROBE_SEED, the column and its corpora, N), so every pair of an experiment sees
the same windows; N = --probe-size, else `probes.windows`, else the study's 10,000 (dataset
overlap) / 5,000 (task overlap).
- dataset split: one column per probe corpus (default the training corpus): metric_<corpus>
  (the study's `metric_tinycodes`);
- task split: metric_common (corpora both models trained on), metric_OOD_for_one (exactly
  one), metric_OOD_for_all (neither), each window from one corpus of the group chosen
  uniformly; an empty group gives -1.

Batch size: at most --batch-size windows, fewer when the activations of a batch would not
fit in 60% of the free GPU memory (or 2 GiB on the CPU).

Loss file: each model's validation loss (state.json, measured after training).
"""

from __future__ import annotations

import contextlib
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from ... import results, runs, splits
from ...errors import UserError
from ...scoring import (
    FEATURES_DIR,
    PROBE_SEED,
    SkipPair,
    pair_label,
    per_model_rows,
    score_probes,
    similarity_rows,
    warn,
)

SIM_CSV = results.LLM_SIM_CSV
LOSS_CSV = results.LLM_LOSS_CSV
TASK_COLUMNS = results.TEXT_TASK_PROBES
DEFAULT_WINDOWS = {"dataset": 10_000, "task": 5_000}
CPU_BUDGET = 2 << 30
GPU_SHARE = 0.6
_CACHE_KEY = "llm_base"


def _cfg(args: dict) -> dict:
    return args["config"]


def is_task(args: dict) -> bool:
    return _cfg(args)["split"] == "task"


def probe_corpora(cfg: dict) -> list[str]:
    names = cfg.get("probes", {}).get("corpora") or ([cfg["corpus"]] if cfg["split"] == "dataset"
                                                     else list(cfg["corpora"]))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{cfg.get('name')}: probes.corpora must be a list of corpus names")
    return names


def probe_columns(args: dict) -> list[str]:
    if is_task(args):
        return list(TASK_COLUMNS)
    return [f"metric_{c}" for c in probe_corpora(_cfg(args))]


def csv_files(args: dict) -> dict[str, list[str]]:
    return {SIM_CSV: results.similarity_header(probe_columns(args)),
            LOSS_CSV: list(results.LOSS_COLUMNS)}


def sidecar(args: dict) -> dict:
    cfg = _cfg(args)
    return {"arch": "llama", "dataset": "all" if is_task(args) else cfg["corpus"],
            "kind": "task" if is_task(args) else "ds", "base_model": cfg["base_model"]}


def adapter_dirs(pair_dir: Path) -> list[Path]:
    return [Path(pair_dir) / f"split_{i}" for i in (0, 1)]


def inputs(pair_dir: Path, args: dict) -> list[Path]:
    from .train import CHECKPOINT

    return [d / CHECKPOINT for d in adapter_dirs(pair_dir)]


def probe_groups(args: dict, split) -> dict[str, list[str]]:
    probes = probe_corpora(_cfg(args))
    if not is_task(args):
        return {f"metric_{c}": [c] for c in probes}
    a, b = set(split.a), set(split.b)
    return {"metric_common": [c for c in probes if c in a and c in b],
            "metric_OOD_for_one": [c for c in probes if (c in a) != (c in b)],
            "metric_OOD_for_all": [c for c in probes if c not in a and c not in b]}


def n_windows(args: dict, opts) -> int:
    cfg = _cfg(args)
    return int(opts.probe_size or cfg.get("probes", {}).get("windows") or DEFAULT_WINDOWS[cfg["split"]])


def probe_windows(cache: dict, folders: dict, corpora: list[str], block: int, n: int, column: str,
                  where: str) -> np.ndarray | None:
    """[n, block] windows of the group's val streams (cached per experiment data); None if too short."""
    from ...data import hftext
    from ...data.text import MixedWindows, TokenWindows

    key = ("llm_windows", tuple(str(folders[c]) for c in corpora), column, block, n)
    if key not in cache:
        samplers = []
        for corpus in corpora:
            stream = hftext.stream(folders[corpus], "val")
            if len(stream) < block:
                warn(f"{where}: {corpus} val stream has {len(stream)} tokens, fewer than one window "
                     f"of {block}: {column} is -1")
                cache[key] = None
                return None
            samplers.append(TokenWindows(stream, None, block))
        seed = zlib.crc32(f"{column}|{'|'.join(corpora)}".encode())
        cache[key] = MixedWindows(samplers).windows(np.random.default_rng([PROBE_SEED, seed, n]), n)
    return cache[key]


# ---- models ----------------------------------------------------------------------------------
def base_dtype(cfg: dict, device: str):
    want = cfg.get("probes", {}).get("dtype", "float32")
    if want not in ("float32", "bfloat16"):
        raise UserError(f"{cfg.get('name')}: probes.dtype must be float32 or bfloat16, got {want!r}")
    return torch.bfloat16 if want == "bfloat16" and device.startswith("cuda") else torch.float32


def with_adapters(cache: dict, found, dirs: list[Path], names: list[str], *, dtype, device: str):
    """The cached base (loaded once) with the adapters of `dirs` under `names`; the previous
    pair's adapters are dropped."""
    from peft import PeftModel

    from ...models import llama

    key = (str(found.path), str(dtype), device)
    held = cache.get(_CACHE_KEY)
    if held is not None and held[0] != key:  # another base: free the old one first
        cache.pop(_CACHE_KEY)
        held = None
    try:
        if held is None:
            base = llama.load(found, dtype=dtype, device=device)
            with warnings.catch_warnings():  # peft asks transformers a deprecated question
                warnings.simplefilter("ignore", FutureWarning)
                model = PeftModel.from_pretrained(base, str(dirs[0]), adapter_name=names[0])
            old = []
        else:
            model, old = held[1], list(held[2])
            model.load_adapter(str(dirs[0]), adapter_name=names[0])
        model.load_adapter(str(dirs[1]), adapter_name=names[1])
    except UserError:
        raise
    except Exception as e:  # a corrupt or mismatched adapter
        raise UserError(f"cannot load the adapters {dirs[0]}, {dirs[1]} on {found.ref} "
                        f"({str(e).strip().splitlines()[0][:200]})") from None
    model.set_adapter(names[0])  # before deleting the previous pair's (one was active)
    for name in old:
        model.delete_adapter(name)
    model.eval()
    cache[_CACHE_KEY] = (key, model, tuple(names))
    return model


def batch_size(model, block: int, limit: int, device: str, dtype) -> int:
    """Windows per batch: at most `limit`, and what the activations of one window allow."""
    cfg = model.config
    inner = getattr(cfg, "intermediate_size", 4 * cfg.hidden_size)
    width = torch.finfo(dtype).bits // 8
    per_window = block * (8 * cfg.hidden_size + 3 * inner) * width
    per_window += cfg.num_attention_heads * block * block * width  # attention scores
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        budget = int(free * GPU_SHARE)
    else:
        budget = CPU_BUDGET
    return max(1, min(int(limit), budget // per_window))


def features(model, adapter: str, windows: np.ndarray, *, batch: int, device: str, dtype,
             per_block: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mean-pooled final-norm features [n, width] (float32) with `adapter` active, and each
    block's mean-pooled output when `per_block`."""
    from ...models import llama

    model.set_adapter(adapter)
    model.eval()
    dec = llama.decoder(model)
    blocks: list[list[torch.Tensor]] = [[] for _ in dec.layers] if per_block else []
    hooks = [layer.register_forward_hook(
        lambda _m, _i, out, j=j: blocks[j].append(
            (out[0] if isinstance(out, tuple) else out).float().mean(dim=1).cpu()))
        for j, layer in enumerate(dec.layers)] if per_block else []
    autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
                if dtype == torch.bfloat16 else contextlib.nullcontext())
    out = []
    try:
        with torch.no_grad(), autocast:
            for start in range(0, len(windows), batch):
                idx = torch.from_numpy(windows[start:start + batch]).to(device)
                hidden = dec(input_ids=idx).last_hidden_state
                out.append(hidden.float().mean(dim=1).cpu())
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(out), [torch.cat(b) for b in blocks]


def save_blocks(pair_dir: Path, column: str, model_idx: int, blocks: list[torch.Tensor]) -> None:
    for j, b in enumerate(blocks):
        path = Path(pair_dir) / FEATURES_DIR / "blocks" / f"{column}_model{model_idx}_block{j}.npy"
        with runs.atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, b.numpy().astype(np.float32), allow_pickle=False)


def base_of(args: dict):
    """The base model as the config names it, else the folder args.json recorded (a run
    measured with another $REPRSIM_DATA than it trained with)."""
    from ...models import llama

    try:
        return llama.resolve(_cfg(args)["base_model"])
    except UserError:
        rec = args.get("base_model", {})
        if rec.get("path") and (Path(rec["path"]) / "config.json").is_file():
            return llama.Found(rec.get("ref", rec["path"]), Path(rec["path"]), rec.get("revision"))
        raise


def val_losses(pair_dir: Path) -> list[float]:
    from .train import CHECKPOINT, STATE

    out = []
    for d in adapter_dirs(pair_dir):
        if not (d / CHECKPOINT).is_file():
            raise SkipPair(f"missing adapter {d / CHECKPOINT}")
        state = runs.read_json(d / STATE) if (d / STATE).is_file() else {}
        if not isinstance(state.get("val_loss"), int | float):
            raise UserError(f"{d / STATE}: records no val_loss")
        out.append(float(state["val_loss"]))
    return out


def measure_pair(pair_dir: Path, args: dict, opts, cache: dict) -> dict[str, list[list[str]]]:
    from .train import cpu_threads

    with cpu_threads(_cfg(args), opts.device):
        return _measure(Path(pair_dir), args, opts, cache)


def _measure(pair_dir: Path, args: dict, opts, cache: dict) -> dict[str, list[list[str]]]:
    from .train import data_folders, recipe

    cfg = _cfg(args)
    where = pair_label(pair_dir)
    losses = val_losses(pair_dir)
    split = splits.load(pair_dir / "split_indices")
    found = base_of(args)
    recorded = args.get("base_model", {}).get("revision")
    if recorded and found.revision and recorded != found.revision:
        warn(f"{where}: trained on revision {recorded} of {cfg['base_model']}, measuring on {found.revision}")
    folders = data_folders({**cfg, "probes": {"corpora": probe_corpora(cfg)}}, found)
    block = recipe(cfg)["block_size"]
    dtype = base_dtype(cfg, opts.device)
    names = [f"{where.replace('/', '_').replace('.', '_')}_{i}" for i in (0, 1)]
    model = with_adapters(cache, found, adapter_dirs(pair_dir), names, dtype=dtype, device=opts.device)
    batch = batch_size(model, block, opts.batch_size, opts.device, dtype)
    per_block = bool(cfg.get("probes", {}).get("per_block", False))
    n = n_windows(args, opts)
    feats = {}
    for column, corpora in probe_groups(args, split).items():
        windows = probe_windows(cache, folders, corpora, block, n, column, where) if corpora else None
        if windows is None:
            feats[column] = [None, None]
            continue
        pair = []
        for i, name in enumerate(names, start=1):
            f, blocks = features(model, name, windows, batch=batch, device=opts.device,
                                 dtype=dtype, per_block=per_block)
            pair.append(f)
            if blocks:
                save_blocks(pair_dir, column, i, blocks)
        feats[column] = pair
    scores = score_probes(feats, probe_columns(args), pair_dir=pair_dir, where=where, opts=opts)
    seed, overlap = int(args["seed"]), float(split.overlap)
    return {SIM_CSV: similarity_rows(seed, overlap, scores),
            LOSS_CSV: per_model_rows(seed, overlap, losses)}
