"""Train one pair of GPT models on a text split (docs/protocol.md sections 1-2) into its run folder.

`train_pair(cfg, seed, frac)` computes the split (the seed alone decides it, never the
DDP rank), saves it under `split_indices/`, trains model 0 then model 1, and writes the
run folder of repr_sim.runs: args.json, split_indices/, split_<i>/ckpt.pt (the best
validation checkpoint), split_<i>/log.txt and evals.jsonl, `done` last.

Data. Dataset split (`split = "dataset"`): `chunk_split` of the corpus's train stream;
each training window (block_size + 1 tokens) lies inside one of the model's chunks;
validation uses the corpus's whole val stream. Task split (`split = "task"`):
`corpus_split` of the configured corpora; each window picks one of the model's corpora
uniformly, then a window of its train stream; validation the same over their val streams.

Recipe ([recipe] table): AdamW (weight decay on 2-D weights only), gradient clipping,
linear warmup then cosine decay to lr * min_lr_ratio, `grad_accum` micro-batches of
`batch_size` windows per step, bf16 autocast and optional torch.compile on CUDA.
Validation every `eval_interval` steps (and at the first and last) over `eval_iters`
batches: the same windows every time (seeded per model), so two evaluations compare the
model, not the sample. The checkpoint kept is the best one; training stops after
`patience` evaluations without improvement.

DDP. Started by torchrun (RANK / WORLD_SIZE / LOCAL_RANK in the environment) the
processes form a group (gloo on the CPU, nccl on CUDA); the micro-batches of a step and
the validation batches are divided among them, the validation loss is averaged over
them, and only rank 0 writes. Batches are drawn from RNGs seeded by
(seed, model, rank, step, micro-batch), so a step's data never depends on what ran before.

Resume. After every evaluation, rank 0 writes `split_<i>/resume.pt` (weights, optimizer,
step, early-stopping counters) atomically; a rerun continues from it (same data for every
later step; dropout is reseeded from the resume step, so not bit for bit). The best-val
checkpoint is written before resume.pt and is the authority on the best loss. A model
whose `state.json` says finished is kept; a pair with `done` is skipped. Everything loads
with torch.load(weights_only=True).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ... import experiments, runs, splits
from ... import pair as common
from ...data import text as textdata
from ...errors import UserError
from ...models import gpt as gptmod
from . import KIND

# CLI option -> config key (repr_sim.train.cli_train applies them).
OPTION_KEYS = {
    "iters": "recipe.iters",
    "batch_size": "recipe.batch_size",
    "block_size": "model.block_size",
    "eval_iters": "recipe.eval_iters",
    "lr": "recipe.lr",
}
SPLIT_KINDS = ("dataset", "task")
CHECKPOINT = "ckpt.pt"
RESUME = "resume.pt"
STATE = "state.json"
LOG = "log.txt"
EVALS = "evals.jsonl"
RECIPE_DEFAULTS = {
    "iters": 10000,
    "batch_size": 128,
    "grad_accum": 1,
    "lr": 5e-4,
    "min_lr_ratio": 0.1,
    "warmup_frac": 0.1,
    "weight_decay": 0.1,
    "betas": [0.9, 0.95],
    "grad_clip": 1.0,
    "eval_interval": 100,
    "eval_iters": 100,
    "patience": 8,
    "compile": False,
    "dtype": "bfloat16",
    "log_interval": 10,
}
_POSITIVE_INTS = ("iters", "batch_size", "grad_accum", "eval_interval", "eval_iters", "patience",
                  "log_interval")
_TRAIN_STREAM, _EVAL_STREAM = 0, 1  # RNG stream tags


# ---------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------


def recipe(cfg: dict) -> dict:
    """The [recipe] table with defaults filled in, checked (UserError on a bad value)."""
    where = cfg.get("config_path", cfg.get("name", "config"))
    table = cfg.get("recipe", {})
    unknown = sorted(set(table) - set(RECIPE_DEFAULTS))
    if unknown:
        raise UserError(f"{where}: unknown key(s) recipe.{', recipe.'.join(unknown)}")
    r = {**RECIPE_DEFAULTS, **table}
    common.check_positive_ints(r, _POSITIVE_INTS, where, "recipe.")
    common.check_non_negative(r, ("lr", "weight_decay", "grad_clip", "min_lr_ratio", "warmup_frac"),
                              where, "recipe.")
    if r["warmup_frac"] > 1 or r["min_lr_ratio"] > 1:
        raise UserError(f"{where}: recipe.warmup_frac and recipe.min_lr_ratio must be <= 1")
    if r["dtype"] not in ("bfloat16", "float32"):
        raise UserError(f"{where}: recipe.dtype must be bfloat16 or float32, got {r['dtype']!r}")
    if not isinstance(r["compile"], bool):
        raise UserError(f"{where}: recipe.compile must be true or false, got {r['compile']!r}")
    return r


def check_config(cfg: dict) -> None:
    where = cfg.get("config_path", cfg.get("name", "config"))
    if cfg.get("split") not in SPLIT_KINDS:
        raise UserError(f"{where}: split must be one of {', '.join(SPLIT_KINDS)}, got {cfg.get('split')!r}")
    if cfg["split"] == "dataset":
        if "corpus" not in cfg:
            raise UserError(f"{where}: missing key 'corpus'")
        textdata.get_corpus(cfg["corpus"])
    else:
        corpora = cfg.get("corpora")
        if not isinstance(corpora, list) or len(corpora) < 2:
            raise UserError(f"{where}: 'corpora' must list at least 2 corpora")
        for name in corpora:
            textdata.get_corpus(name)
    if "model" not in cfg or "block_size" not in cfg["model"]:
        raise UserError(f"{where}: missing key 'model.block_size'")
    try:  # the model arguments (vocab filled in later) are checked by GPTConfig itself
        gptmod.GPTConfig.from_dict({"vocab_size": 1, **cfg["model"]})
    except (ValueError, TypeError) as e:
        raise UserError(f"{where}: [model] {e}") from None
    recipe(cfg)


def corpora_of(cfg: dict) -> list[str]:
    return [cfg["corpus"]] if cfg["split"] == "dataset" else list(cfg["corpora"])


def tokenizer_of(cfg: dict) -> tuple[str, int]:
    """(tokenizer name, its vocabulary size) shared by every corpus the experiment reads."""
    metas = {c: textdata.read_meta(c) for c in corpora_of(cfg)}
    names = {m["tokenizer"] for m in metas.values()}
    if len(names) != 1:
        listed = ", ".join(f"{c}: {m['tokenizer']}" for c, m in metas.items())
        raise UserError(f"the corpora were prepared with different tokenizers ({listed}); prepare them again with one")
    meta = next(iter(metas.values()))
    return meta["tokenizer"], int(meta["vocab_size"])


def make_split(cfg: dict, seed: int, frac: float):
    block = int(cfg["model"]["block_size"])
    if cfg["split"] == "dataset":
        n_tokens = len(textdata.load_stream(cfg["corpus"], "train"))
        return splits.chunk_split(n_tokens, frac, block_size=block,
                                  num_chunks=int(cfg.get("num_chunks", 80)), seed=seed)
    return splits.corpus_split(list(cfg["corpora"]), frac, seed=seed)


def model_corpora(cfg: dict, split, index: int) -> list[str]:
    if cfg["split"] == "dataset":
        return [cfg["corpus"]]
    return list(split.a if index == 0 else split.b)


def samplers(cfg: dict, split, index: int):
    """(train windows, val windows) of model `index`, windows of block_size + 1 tokens."""
    length = int(cfg["model"]["block_size"]) + 1
    if cfg["split"] == "dataset":
        chunks = split.chunks_a if index == 0 else split.chunks_b
        train = textdata.stream_windows(cfg["corpus"], "train", length, ranges=chunks)
        val = textdata.stream_windows(cfg["corpus"], "val", length)
        return train, val
    names = model_corpora(cfg, split, index)
    return (textdata.mixed_windows(names, "train", length),
            textdata.mixed_windows(names, "val", length))


def lr_at(step: int, *, lr: float, iters: int, warmup: int, min_lr: float) -> float:
    """Linear warmup over `warmup` steps, then cosine from lr to min_lr at `iters`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if iters <= warmup:
        return lr
    progress = min(1.0, (step - warmup) / (iters - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def batch_rng(seed: int, index: int, rank: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), int(rank), *map(int, parts)])


def torch_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


# ---------------------------------------------------------------------------------------
# Processes and devices
# ---------------------------------------------------------------------------------------


@dataclass
class Dist:
    """This process's place in a torchrun group (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    created: bool = False  # we initialised the process group (and destroy it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Dist:
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError:
            raise UserError("RANK / WORLD_SIZE / LOCAL_RANK must be integers") from None
        return cls(rank=rank, world=world, local_rank=local)

    def start(self, device_type: str) -> None:
        if self.world <= 1:
            return
        import torch.distributed as tdist

        if not tdist.is_initialized():
            tdist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
            self.created = True

    def stop(self) -> None:
        if self.created:
            import torch.distributed as tdist

            tdist.destroy_process_group()
            self.created = False

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as tdist

            tdist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as tdist

            tdist.all_reduce(value, op=tdist.ReduceOp.SUM)
            value = value / self.world
        return value

    def share(self, obj):
        """Rank 0's value of `obj`, on every rank."""
        if self.world <= 1:
            return obj
        import torch.distributed as tdist

        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]


def resolve_device(device: str | None, dist: Dist) -> str:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise UserError(f"device must be cpu or cuda, got {device!r}")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available here")
        if dist.world > 1:
            torch.cuda.set_device(dist.local_rank)
            return f"cuda:{dist.local_rank}"
    return device


# ---------------------------------------------------------------------------------------
# One model
# ---------------------------------------------------------------------------------------


class Logger:
    """Lines to stdout and split_<i>/log.txt (rank 0 only)."""

    def __init__(self, folder: Path, enabled: bool):
        self.path = folder / LOG
        self.enabled = enabled

    def __call__(self, line: str) -> None:
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{stamp} {line}\n")


def _load_resume(path: Path, log) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # written atomically: a bad file is damage from elsewhere
        log(f"{path}: unreadable resume checkpoint ({type(e).__name__}); starting this model again")
        return None


@dataclass
class Trainer:
    cfg: dict
    split: object
    index: int
    folder: Path  # split_<i>/
    device: str
    dist: Dist
    seed: int
    tokenizer: str
    vocab: int  # the tokenizer's vocabulary (embedding rows are padded above it)
    label: str

    def __post_init__(self):
        self.r = recipe(self.cfg)

    def model_args(self) -> dict:
        return {**self.cfg["model"], "vocab_size": gptmod.padded_vocab(self.vocab)}

    def _autocast(self):
        if self.device.startswith("cuda") and self.r["dtype"] == "bfloat16":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _to_device(self, windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.from_numpy(windows)
        if self.device.startswith("cuda"):
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t[:, :-1], t[:, 1:]

    def evaluate(self, model, val, r: dict) -> float:
        """Mean loss over this rank's share of the fixed validation batches, averaged over ranks."""
        n = max(1, math.ceil(r["eval_iters"] / self.dist.world))
        model.eval()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.no_grad(), self._autocast():
            for j in range(n):
                rng = batch_rng(self.seed, self.index, self.dist.rank, _EVAL_STREAM, j)
                x, y = self._to_device(val.windows(rng, r["batch_size"]))
                _, loss = model(x, y)
                total += loss.double()
        model.train()
        return float(self.dist.mean(total / n).item())

    def _checkpoint(self, model, *, it: int, val_loss: float) -> dict:
        return gptmod.checkpoint_dict(
            model,
            iter_num=it,
            best_val_loss=val_loss,
            tokenizer=self.tokenizer,
            n_vocab=self.vocab,
            corpora=model_corpora(self.cfg, self.split, self.index),
            experiment=self.cfg["name"],
            model_idx=self.index,
        )

    def run(self) -> dict:
        r = self.r
        main = self.dist.main
        log = Logger(self.folder, main)
        train, val = samplers(self.cfg, self.split, self.index)
        cuda = self.device.startswith("cuda")

        torch.manual_seed(torch_seed(self.seed, self.index))  # same init on every rank
        model = gptmod.build_gpt(**self.model_args()).to(self.device)
        optimizer = model.optimizer(lr=r["lr"], weight_decay=r["weight_decay"],
                                    betas=r["betas"], device_type="cuda" if cuda else "cpu")
        start, bad_evals, best_iter, elapsed = 0, 0, None, 0.0
        best = math.inf
        saved = _load_resume(self.folder / RESUME, log)
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            start, bad_evals, best_iter = saved["iter_num"], saved["bad_evals"], saved["best_iter"]
            elapsed = saved["elapsed"]
            if (self.folder / CHECKPOINT).is_file():
                best = gptmod.read_checkpoint(self.folder / CHECKPOINT)["best_val_loss"]
            log(f"{self.label}: resumed from iteration {start} (best val loss {best:.4f})")
        torch.manual_seed(torch_seed(self.seed, self.index, self.dist.rank, start))  # dropout

        step_model = model
        if r["compile"] and cuda:
            step_model = torch.compile(model)
        elif r["compile"]:
            log(f"{self.label}: torch.compile is used on CUDA only; running eagerly on {self.device}")
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            step_model = DDP(step_model, device_ids=[self.dist.local_rank] if cuda else None)

        iters, accum = r["iters"], max(1, r["grad_accum"] // self.dist.world)
        warmup = int(r["warmup_frac"] * iters)
        min_lr = r["lr"] * r["min_lr_ratio"]
        tokens_per_step = r["batch_size"] * accum * self.dist.world * int(self.cfg["model"]["block_size"])
        if start == 0:
            log(f"{self.label}: {model.num_params() / 1e6:.2f}M parameters, corpora "
                f"{', '.join(model_corpora(self.cfg, self.split, self.index))}, {iters} iterations "
                f"of {tokens_per_step:,} tokens ({self.dist.world} process(es), {accum} micro-batch(es) "
                f"each), device {self.device}")

        from ...paths import progress

        quiet = {} if main else {"disable": True}  # only rank 0 draws (on a terminal)
        bar = progress(total=iters, initial=start, desc=self.label, unit="it", dynamic_ncols=True, **quiet)
        running, running_n, stopped_early, it = 0.0, 0, False, start
        t0 = time.perf_counter()
        if saved is not None and bad_evals >= r["patience"]:
            stopped_early = True  # killed between the stopping evaluation and state.json
        while not stopped_early:
            if (it % r["eval_interval"] == 0 or it == iters) and not (saved is not None and it == start):
                val_loss = self.evaluate(step_model, val, r)
                improved = val_loss < best
                if improved:
                    best, best_iter, bad_evals = val_loss, it, 0
                else:
                    bad_evals += 1
                elapsed += time.perf_counter() - t0
                t0 = time.perf_counter()
                row = {"iter": it, "val_loss": round(val_loss, 6),
                       "train_loss": round(running / running_n, 6) if running_n else None,
                       "lr": lr_at(min(it, iters - 1), lr=r["lr"], iters=iters, warmup=warmup, min_lr=min_lr),
                       "best_val_loss": round(best, 6), "time_s": round(elapsed, 3)}
                running, running_n = 0.0, 0
                if main:
                    if improved:
                        runs.atomic_torch_save(self._checkpoint(model, it=it, val_loss=val_loss),
                                               self.folder / CHECKPOINT)
                    with open(self.folder / EVALS, "a", encoding="utf-8") as f:
                        f.write(json.dumps(row) + "\n")
                    runs.atomic_torch_save({
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "iter_num": it, "bad_evals": bad_evals, "best_iter": best_iter,
                        "elapsed": elapsed, "model_args": self.model_args(),
                    }, self.folder / RESUME)
                    runs.record_steps(self.folder, it, iters)
                note = "best" if improved else (f"best {best:.4f} at {best_iter}, {bad_evals}/"
                                                f"{r['patience']} without improvement")
                log(f"{self.label} iter {it}: val loss {val_loss:.4f} ({note})")
                if bad_evals >= r["patience"]:
                    stopped_early = True
                    log(f"{self.label}: early stop at iteration {it}")
                    break
            if it >= iters:
                break
            lr = lr_at(it, lr=r["lr"], iters=iters, warmup=warmup, min_lr=min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=self.device)
            for micro in range(accum):
                rng = batch_rng(self.seed, self.index, self.dist.rank, _TRAIN_STREAM, it, micro)
                x, y = self._to_device(train.windows(rng, r["batch_size"]))
                sync = micro == accum - 1 or self.dist.world == 1
                ctx = contextlib.nullcontext() if sync else step_model.no_sync()
                with ctx, self._autocast():
                    _, loss = step_model(x, y)
                    (loss / accum).backward()
                loss_sum += loss.detach().float()
            if r["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), r["grad_clip"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_loss = float(loss_sum.item()) / accum  # one device sync per step
            running += step_loss
            running_n += 1
            it += 1
            bar.update(1)
            if it % r["log_interval"] == 0:
                bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
                if main:
                    with open(self.folder / LOG, "a", encoding="utf-8") as f:
                        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} iter {it}: train loss "
                                f"{step_loss:.4f}, lr {lr:.3e}\n")
        bar.close()
        state = {"finished": True, "best_val_loss": best, "best_iter": best_iter, "last_iter": it,
                 "iters": iters, "stopped_early": stopped_early, "time_s": round(elapsed, 3),
                 "corpora": model_corpora(self.cfg, self.split, self.index)}
        if main:
            runs.atomic_write_json(self.folder / STATE, state)
            (self.folder / RESUME).unlink(missing_ok=True)
        log(f"{self.label}: finished, best val loss {best:.4f} at iteration {best_iter}")
        return state


# ---------------------------------------------------------------------------------------
# The pair
# ---------------------------------------------------------------------------------------


def pair_fields(cfg, split, tokenizer, vocab, dist) -> dict:
    """The text kind's own entries of a pair's args.json."""
    return {
        "overlap": split.overlap,
        "arch": gptmod.ARCH,
        "model_args": {**cfg["model"], "vocab_size": gptmod.padded_vocab(vocab)},
        "num_classes": [vocab, vocab],  # a language model's classes: its vocabulary
        "dataset": cfg["corpus"] if cfg["split"] == "dataset" else list(cfg["corpora"]),
        "split": cfg["split"],
        "corpora": [model_corpora(cfg, split, i) for i in (0, 1)],
        "tokenizer": tokenizer,
        "block_size": int(cfg["model"]["block_size"]),
        "world_size": dist.world}


def model_finished(folder: Path) -> bool:
    state = folder / STATE
    return (folder / CHECKPOINT).is_file() and state.is_file() and runs.read_json(state).get("finished")


def prepare_pair(cfg: dict, seed: int, frac: float, device: str, dist: Dist) -> common.PairJob:
    """Both GPTs of pair (seed, frac); their data checked before anything is written."""
    check_config(cfg)
    tokenizer, vocab = tokenizer_of(cfg)
    split = make_split(cfg, seed, frac)  # the seed alone decides it: the same on every rank
    for i in (0, 1):  # fail before training anything if a model's data is unusable
        samplers(cfg, split, i)

    def train_model(i: int, model_dir: Path) -> None:
        label = f"{cfg['name']} seed {seed} frac {frac:g} model {i}"
        Trainer(cfg, split, i, model_dir, device, dist, seed, tokenizer, vocab, label).run()

    return common.PairJob(fields=pair_fields(cfg, split, tokenizer, vocab, dist), n_models=2,
                          train_model=train_model, checkpoint=CHECKPOINT, split=split,
                          steps=[recipe(cfg)["iters"]] * 2, model_finished=model_finished,
                          dist=dist)


def train_pair(cfg: dict, seed: int, frac: float, *, device: str | None = None, args=None) -> Path:
    """Train both models of pair (seed, frac) of a text experiment; returns the pair folder."""
    dist = Dist.from_env()
    device = resolve_device(device if device is not None else getattr(args, "device", None), dist)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if runs.is_finished(experiments.pair_folder(cfg, seed, frac)):  # before starting processes
        return common.train(cfg, seed, frac, None, device=device)
    dist.start("cuda" if device.startswith("cuda") else "cpu")
    try:
        return common.train(cfg, seed, frac, lambda c, s, f, d: prepare_pair(c, s, f, d, dist),
                            device=device, defaults=KIND.defaults)
    finally:
        dist.stop()


# ---------------------------------------------------------------------------------------
# reprsim sample
# ---------------------------------------------------------------------------------------


def cli_sample(args) -> int:
    device = resolve_device(args.device, Dist())
    model, ckpt = gptmod.load_checkpoint(args.checkpoint, map_location=device)
    name = ckpt.get("tokenizer")
    run_args = Path(args.checkpoint).resolve().parent.parent / "args.json"
    if not isinstance(name, str) and run_args.is_file():  # else the run's record of it
        name = runs.read_json(run_args).get("tokenizer")
    if not isinstance(name, str):
        raise UserError(f"{args.checkpoint}: records no tokenizer, cannot decode its tokens")
    enc = textdata.get_tokenizer(name)
    if args.tokens < 1:
        raise UserError(f"--tokens must be positive, got {args.tokens}")
    if args.temperature <= 0:
        raise UserError(f"--temperature must be positive, got {args.temperature}")
    prompt = enc.encode(args.prompt, allowed_special="all") or [textdata.eot_id(enc)]
    idx = torch.tensor([prompt], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(int(args.seed))
    out = model.generate(idx, args.tokens, temperature=args.temperature, top_k=args.top_k,
                         n_vocab=int(ckpt.get("n_vocab", enc.n_vocab)), generator=generator)
    print(enc.decode(out[0].tolist()))
    return 0
