"""Train one pair of LoRA adapters on a text split (docs/protocol.md section 6.5) into its run folder.

Base model: `base_model` (repr_sim.models.llama.resolve: a folder, or a hub name already in
the Hugging Face cache), loaded in float32 as the study did, every weight frozen; args.json
records its folder, cache revision and file hashes. Data: the corpora prepared with the base
model's own tokenizer (`reprsim prepare-text CORPUS --preset <preset> --tokenizer hf:<base>`,
repr_sim.data.hftext), found by the tokenizer's hash.

Split and windows (seeded by the run seed alone; docs/llm.md):
- dataset: repr_sim.splits.chunk_split of the corpus's train stream (80 chunks, 40 per model,
  int(frac * 40) shared); a window = `block_size` tokens at a uniform position inside one of
  the model's chunks (equal chunks: a uniform chunk, then a uniform start, as the study).
- task: repr_sim.splits.corpus_split of the corpora (3 per model, round(3 * frac) shared); a
  window picks one of the model's corpora uniformly, then a uniform position in its stream.
Inputs are the labels (the model shifts them). The windows of step s, micro-batch m, rank r come
from an RNG seeded by (seed, model, r, s, m), and LoRA dropout is reseeded per step, so a
resumed run draws exactly what the killed one would have.

Recipe ([lora], [recipe]): LoRA r 32, alpha 64, dropout 0.05 on q,k,v,o,gate,up,down (bias
none, the adapter initialised from a generator seeded by (seed, model), not by what the first
model left behind); `sequences_per_step` (32) sequences per optimiser step = batch_size x
accumulation x processes; AdamW (the HF Trainer's defaults: betas 0.9/0.999, eps 1e-8, weight
decay 0, fused on CUDA), lr 5e-5 decaying linearly to 0 with no warmup, gradient clipping 1.0,
bf16 autocast on CUDA (`dtype = "bfloat16"`), `steps` optimiser steps (1,000 for task
overlap). After training: the mean loss over `val_windows` fixed windows of the model's own
corpora's val streams (the loss file's value).

Files per model (split_<i>/): adapter_model.safetensors + adapter_config.json (PEFT
save_pretrained: the adapter only, never the base), state.json (finished, val_loss, ...),
log.txt, and while training resume.pt (the adapter's weights, the optimiser, the step; every
`save_every` steps, atomically; loaded with weights_only=True). A rerun continues from it.

Several GPUs: started by torchrun, the processes share one pair as the text kind's do (its
Dist): the split is the seed's, the micro-batches of a step are divided among the ranks, the
adapter gradients are averaged by DistributedDataParallel, and rank 0 writes.
"""

from __future__ import annotations

import contextlib
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from ... import experiments, runs, splits
from ... import pair as common
from ...data import hftext
from ...data.text import MixedWindows, TokenWindows
from ...errors import UserError
from ...models import llama
from ..text.train import Dist, batch_rng, resolve_device, torch_seed
from . import KIND

OPTION_KEYS = {
    "iters": "recipe.steps",
    "batch_size": "recipe.batch_size",
    "block_size": "recipe.block_size",
    "lr": "recipe.lr",
}
SPLIT_KINDS = ("dataset", "task")
CHECKPOINT = "adapter_model.safetensors"
RESUME = "resume.pt"
STATE = "state.json"
LOG = "log.txt"
VAL_SEED = 20250925  # the validation windows: the same for every model of an experiment
_TRAIN_STREAM, _DROPOUT_STREAM, _INIT_STREAM = 0, 1, 2
_POSITIVE = ("steps", "sequences_per_step", "batch_size", "block_size", "save_every",
             "log_interval", "val_windows")


# ---- config --------------------------------------------------------------------------------
def _where(cfg: dict) -> str:
    return str(cfg.get("config_path", cfg.get("name", "config")))


def recipe(cfg: dict) -> dict:
    where, table = _where(cfg), cfg.get("recipe", {})
    unknown = sorted(set(table) - set(KIND.defaults["recipe"]))
    if unknown:
        raise UserError(f"{where}: unknown key(s) recipe.{', recipe.'.join(unknown)}")
    r = {**KIND.defaults["recipe"], **table}
    common.check_positive_ints(r, _POSITIVE, where, "recipe.")
    common.check_non_negative(r, ("lr", "weight_decay", "grad_clip", "eps", "cpu_threads"), where,
                              "recipe.")
    if r["dtype"] not in ("bfloat16", "float32"):
        raise UserError(f"{where}: recipe.dtype must be bfloat16 or float32, got {r['dtype']!r}")
    return r


def lora(cfg: dict) -> dict:
    where, r = _where(cfg), {**KIND.defaults["lora"], **cfg.get("lora", {})}
    common.check_positive_ints(r, ("r",), where, "lora.")
    common.check_non_negative(r, ("alpha", "dropout"), where, "lora.")
    if not isinstance(r["targets"], list) or not r["targets"]:
        raise UserError(f"{where}: lora.targets must list module names")
    return r


def check_config(cfg: dict) -> None:
    where = _where(cfg)
    if cfg.get("split") not in SPLIT_KINDS:
        raise UserError(f"{where}: split must be one of {', '.join(SPLIT_KINDS)}, got {cfg.get('split')!r}")
    if cfg.get("preset") not in hftext.PRESETS:
        raise UserError(f"{where}: preset must be one of {', '.join(hftext.PRESETS)}")
    if cfg["split"] == "task" and (not isinstance(cfg.get("corpora"), list) or len(cfg["corpora"]) < 2):
        raise UserError(f"{where}: 'corpora' must list at least 2 corpora")
    recipe(cfg)
    lora(cfg)


def corpora_of(cfg: dict) -> list[str]:
    return [cfg["corpus"]] if cfg["split"] == "dataset" else list(cfg["corpora"])


# ---- data ----------------------------------------------------------------------------------
def data_folders(cfg: dict, found: llama.Found) -> dict[str, Path]:
    """{corpus: its prepared folder} for the base model's tokenizer (checked to exist)."""
    tok = hftext.load_tokenizer(str(found.path))
    fam = hftext.family(tok)
    out = {}
    for corpus in corpora_of(cfg) + list(cfg.get("probes", {}).get("corpora") or []):
        folder = hftext.data_dir(corpus, cfg["preset"], fam)
        if not (folder / hftext.META).is_file():
            raise UserError(f"corpus {corpus} is not prepared for {cfg['base_model']}'s tokenizer "
                            f"({folder} missing): run `reprsim prepare-text {corpus} --preset "
                            f"{cfg['preset']} --tokenizer hf:{cfg['base_model']}`")
        out[corpus] = folder
    return out


def make_split(cfg: dict, seed: int, frac: float, folders: dict[str, Path]):
    if cfg["split"] == "dataset":
        n_tokens = len(hftext.stream(folders[cfg["corpus"]], "train"))
        return splits.chunk_split(n_tokens, frac, block_size=recipe(cfg)["block_size"],
                                  num_chunks=int(cfg["num_chunks"]), seed=seed)
    return splits.corpus_split(list(cfg["corpora"]), frac, seed=seed)


def model_corpora(cfg: dict, split, index: int) -> list[str]:
    if cfg["split"] == "dataset":
        return [cfg["corpus"]]
    return list(split.a if index == 0 else split.b)


def windows_of(folders: dict[str, Path], corpora: list[str], part: str, length: int,
               ranges=None) -> MixedWindows:
    return MixedWindows([TokenWindows(hftext.stream(folders[c], part), ranges, length)
                         for c in corpora])


def train_windows(cfg, split, index, folders) -> MixedWindows:
    block = recipe(cfg)["block_size"]
    if cfg["split"] == "dataset":
        ranges = split.chunks_a if index == 0 else split.chunks_b
        return windows_of(folders, [cfg["corpus"]], "train", block, ranges)
    return windows_of(folders, model_corpora(cfg, split, index), "train", block)


def val_windows(cfg, split, index, folders) -> np.ndarray:
    r = recipe(cfg)
    names = model_corpora(cfg, split, index)
    rng = np.random.default_rng([VAL_SEED, zlib.crc32("|".join(names).encode()), r["val_windows"]])
    return windows_of(folders, names, "val", r["block_size"]).windows(rng, r["val_windows"])


# ---- one model -----------------------------------------------------------------------------
def build_model(found: llama.Found, lora_cfg: dict, seed: int, index: int, device: str):
    """The frozen base with a fresh LoRA adapter (initialised from a seeded generator)."""
    from peft import LoraConfig, get_peft_model

    base = llama.load(found, device=device)
    config = LoraConfig(r=int(lora_cfg["r"]), lora_alpha=lora_cfg["alpha"],
                        lora_dropout=float(lora_cfg["dropout"]), bias="none",
                        task_type="CAUSAL_LM", target_modules=list(lora_cfg["targets"]))
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft asks transformers a deprecated question (is_gradient_checkpointing): noise
        warnings.simplefilter("ignore", FutureWarning)
        torch.manual_seed(torch_seed(seed, index, _INIT_STREAM))
        try:
            model = get_peft_model(base, config)
        except ValueError as e:  # e.g. target modules the base model does not have
            raise UserError(f"LoRA on {found.ref}: {str(e).splitlines()[0]}") from None
    return model


def lora_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


class Trainer:
    def __init__(self, cfg, split, index, folder, device, dist, seed, found, folders, label):
        self.cfg, self.split, self.index, self.folder = cfg, split, index, Path(folder)
        self.device, self.dist, self.seed, self.found = device, dist, seed, found
        self.folders, self.label, self.r = folders, label, recipe(cfg)

    def log(self, line: str) -> None:
        if not self.dist.main:
            return
        print(line, flush=True)
        with open(self.folder / LOG, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def accumulation(self) -> int:
        per = self.r["batch_size"] * self.dist.world
        if self.r["sequences_per_step"] % per:
            raise UserError(f"{_where(self.cfg)}: recipe.sequences_per_step "
                            f"{self.r['sequences_per_step']} is not a multiple of batch_size x "
                            f"processes = {per}")
        return self.r["sequences_per_step"] // per

    def autocast(self):
        if self.device.startswith("cuda") and self.r["dtype"] == "bfloat16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def resume(self, model, optimizer) -> int:
        path = self.folder / RESUME
        if not path.is_file():
            return 0
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            names = dict(model.named_parameters())
            for name, value in state["lora"].items():
                names[name].data.copy_(value)
            optimizer.load_state_dict(state["optimizer"])
        except Exception as e:  # written atomically: damage from elsewhere
            self.log(f"{path}: unreadable ({type(e).__name__}); training this model from the start")
            return 0
        self.log(f"{self.label}: resuming at step {state['step']}")
        return int(state["step"])

    def save_resume(self, model, optimizer, step: int) -> None:
        if self.dist.main:
            with runs.atomic_path(self.folder / RESUME) as tmp:
                torch.save({"step": step, "lora": lora_state(model),
                            "optimizer": optimizer.state_dict()}, tmp)
            runs.record_steps(self.folder, step, self.r["steps"])

    def step_loss(self, ddp, windows, step: int, accum: int) -> float:
        total = 0.0
        for micro in range(accum):
            rng = batch_rng(self.seed, self.index, self.dist.rank, _TRAIN_STREAM, step, micro)
            x = torch.from_numpy(windows.windows(rng, self.r["batch_size"])).to(self.device)
            sync = micro == accum - 1 or self.dist.world == 1
            with (contextlib.nullcontext() if sync else ddp.no_sync()), self.autocast():
                loss = ddp(input_ids=x, labels=x).loss
                (loss / accum).backward()
            total += float(loss.detach())
        return total / accum

    def validate(self, model) -> float:
        windows = val_windows(self.cfg, self.split, self.index, self.folders)
        model.eval()
        losses = []
        with torch.no_grad(), self.autocast():
            for start in range(0, len(windows), self.r["batch_size"]):
                x = torch.from_numpy(windows[start:start + self.r["batch_size"]]).to(self.device)
                losses.append(float(model(input_ids=x, labels=x).loss) * len(x))
        return sum(losses) / len(windows)

    def run(self) -> dict:
        r, accum = self.r, self.accumulation()
        model = build_model(self.found, lora(self.cfg), self.seed, self.index, self.device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=r["lr"], betas=tuple(r["betas"]), eps=r["eps"],
                                      weight_decay=r["weight_decay"],
                                      fused=self.device.startswith("cuda"))
        step = self.resume(model, optimizer)
        ddp = model
        if self.dist.world > 1:
            ddp = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.dist.local_rank] if self.device.startswith("cuda") else None)
        windows = train_windows(self.cfg, self.split, self.index, self.folders)
        n_train = sum(p.numel() for p in params)
        self.log(f"{self.label}: {n_train:,} LoRA parameters, {accum} x {r['batch_size']} x "
                 f"{self.dist.world} sequences of {r['block_size']} per step, {r['steps']} steps")
        model.train()
        start, t0 = step, time.time()
        while step < r["steps"]:
            torch.manual_seed(torch_seed(self.seed, self.index, self.dist.rank, _DROPOUT_STREAM, step))
            for group in optimizer.param_groups:  # the HF Trainer's "linear": lr -> 0, no warmup
                group["lr"] = r["lr"] * (1.0 - step / r["steps"])
            loss = self.step_loss(ddp, windows, step, accum)
            if r["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(params, r["grad_clip"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % r["log_interval"] == 0 or step == r["steps"]:
                rate = (step - start) * r["sequences_per_step"] * r["block_size"] / max(time.time() - t0, 1e-9)
                self.log(f"{self.label} step {step}/{r['steps']}: loss {loss:.4f}, "
                         f"lr {optimizer.param_groups[0]['lr']:.2e}, {rate:,.0f} tok/s")
            if step % r["save_every"] == 0 and step < r["steps"]:
                self.save_resume(model, optimizer, step)
        state = {}
        if self.dist.main:
            val = self.validate(model)
            model.save_pretrained(self.folder)  # adapter_config.json + the adapter's weights only
            state = {"finished": True, "val_loss": val, "steps": r["steps"],
                     "time_s": round(time.time() - t0, 3),
                     "corpora": model_corpora(self.cfg, self.split, self.index)}
            runs.atomic_write_json(self.folder / STATE, state)
            (self.folder / RESUME).unlink(missing_ok=True)
            self.log(f"{self.label}: finished, val loss {val:.4f}")
        return state


# ---- the pair ------------------------------------------------------------------------------
def model_finished(folder: Path) -> bool:
    state = folder / STATE
    return ((folder / CHECKPOINT).is_file() and state.is_file()
            and bool(runs.read_json(state).get("finished")))


def pair_fields(cfg, split, found, folders, dist) -> dict:
    metas = {c: hftext.read_meta(f) for c, f in folders.items()}
    meta = next(iter(metas.values()))
    return {"overlap": split.overlap, "arch": "llama-lora",
            "base_model": llama.record(found), "lora": lora(cfg), "recipe": recipe(cfg),
            "dataset": cfg["corpus"] if cfg["split"] == "dataset" else list(cfg["corpora"]),
            "split": cfg["split"], "corpora": [model_corpora(cfg, split, i) for i in (0, 1)],
            "tokenizer": meta["tokenizer"], "tokenizer_hash": meta["tokenizer_hash"],
            "data": {c: str(f) for c, f in folders.items()},
            "block_size": recipe(cfg)["block_size"], "world_size": dist.world}


def prepare_pair(cfg: dict, seed: int, frac: float, device: str, dist: Dist) -> common.PairJob:
    check_config(cfg)
    found = llama.resolve(cfg["base_model"])
    folders = data_folders(cfg, found)
    split = make_split(cfg, seed, frac, folders)
    for i in (0, 1):  # fail before training anything if a model's data is unusable
        train_windows(cfg, split, i, folders)

    def train_model(i: int, model_dir: Path) -> None:
        label = f"{cfg['name']} seed {seed} frac {frac:g} model {i}"
        Trainer(cfg, split, i, model_dir, device, dist, seed, found, folders, label).run()

    return common.PairJob(fields=pair_fields(cfg, split, found, folders, dist), n_models=2,
                          train_model=train_model, checkpoint=CHECKPOINT, split=split,
                          steps=[recipe(cfg)["steps"]] * 2, model_finished=model_finished,
                          dist=dist)


def train_pair(cfg: dict, seed: int, frac: float, *, device: str | None = None, args=None) -> Path:
    """Train both adapters of pair (seed, frac); returns the pair folder."""
    dist = Dist.from_env()
    device = resolve_device(device if device is not None else getattr(args, "device", None), dist)
    if runs.is_finished(experiments.pair_folder(cfg, seed, frac)):
        return common.train(cfg, seed, frac, None, device=device)
    dist.start("cuda" if device.startswith("cuda") else "cpu")
    try:
        with cpu_threads(cfg, device):
            return common.train(cfg, seed, frac, lambda c, s, f, d: prepare_pair(c, s, f, d, dist),
                                device=device, defaults=KIND.defaults)
    finally:
        dist.stop()


@contextlib.contextmanager
def cpu_threads(cfg: dict, device: str):
    """torch's CPU threads set to recipe.cpu_threads (0: unchanged) for the block. A tiny model
    on a shared CPU trains many times faster on one thread than on contended ones."""
    want = int(recipe(cfg)["cpu_threads"])
    if not want or device.startswith("cuda"):
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(old)
