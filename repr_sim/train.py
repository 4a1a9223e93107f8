"""`reprsim train`: one pair of models, dispatched by the experiment's `kind`.

Each kind's trainer is a module (imported lazily, so image training never loads the text
stack and the other way round) exposing

    OPTION_KEYS: dict[str, str]   CLI option (argparse dest) -> dotted config key
    train_pair(cfg, seed, frac, *, device=None) -> Path   trains into the pair folder

An option given on the command line that the kind has no key for (e.g. --iters for an
image experiment) is an error, not silently ignored. Options are applied after `--set`,
so an explicit option wins.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

from . import experiments, kinds, runs
from .errors import UserError

# Every per-kind option of `reprsim train` (argparse dest names, see cli.add_train).
OPTIONS = ("epochs", "iters", "batch_size", "block_size", "eval_iters", "lr", "workers")


def trainer(kind: str):
    return kinds.module(kind, "train")


def apply_options(cfg: dict, args, option_keys: dict[str, str]) -> None:
    for option in OPTIONS:
        value = getattr(args, option, None)
        if value is None:
            continue
        flag = "--" + option.replace("_", "-")
        if option not in option_keys:
            raise UserError(f"{flag} does not apply to {cfg['kind']} experiments")
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0 and option != "lr":
            raise UserError(f"{flag} must be positive, got {value}")
        experiments.apply_override(cfg, f"{option_keys[option]}={value!r}")


def add_options(p) -> None:
    """The options of `reprsim train` after the experiment (also what a sweep's TRAIN_ARGS may
    hold: run_task parses them with the same definitions)."""
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--frac", type=float, required=True, help="overlap fraction in [0, 1]")
    p.add_argument("--epochs", type=int, default=None, help="image experiments: epochs")
    p.add_argument("--iters", type=int, default=None, help="text experiments: iterations")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--block-size", type=int, default=None, help="text experiments: context length")
    p.add_argument("--eval-iters", type=int, default=None,
                   help="text experiments: batches per evaluation")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--workers", type=int, default=None,
                   help="data-loading workers (default: usable CPUs)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="default: cuda if available")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set recipe.peak_epoch=5 (repeatable)")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a bad TRAIN_ARGS: one error line, not an exit
        raise UserError(f"train arguments: {message}")


def run_task(experiment: str, seed: int, frac: float, train_args: list[str], *,
             cfg: dict | None = None) -> int:
    """`reprsim train EXPERIMENT --seed S --frac F [train_args]` in this process (what a
    sweep's task runs); `cfg`: an already resolved config instead of the experiment's file.
    Returns the exit code: 2 with one error line for bad input."""
    parser = _Parser(prog="reprsim train")
    add_options(parser)
    try:
        args = parser.parse_args(["--seed", str(seed), "--frac", repr(frac), *train_args])
        args.experiment = experiment
        return train(args, cfg)
    except (UserError, ValueError, FileNotFoundError) as e:
        if os.environ.get("REPRSIM_DEBUG"):
            raise
        print(f"reprsim train: error: {e}", file=sys.stderr, flush=True)
        return 2


def cli_train(args) -> int:
    return train(args)


def train(args, cfg: dict | None = None) -> int:
    """One pair, from parsed `reprsim train` options."""
    if cfg is None:
        cfg = kinds.load(args.experiment, args.overrides)
    else:
        cfg = copy.deepcopy(cfg)
        for assignment in args.overrides:
            experiments.apply_override(cfg, assignment)
    frac = experiments.check_frac(args.frac)
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    folder = experiments.pair_folder(cfg, args.seed, frac)
    if runs.is_finished(folder):  # before importing any training stack: skipping is cheap
        print(f"{folder}: already trained, skipping")
        return 0
    module = trainer(cfg["kind"])
    apply_options(cfg, args, module.OPTION_KEYS)
    module.train_pair(cfg, args.seed, frac, device=args.device)
    return 0
