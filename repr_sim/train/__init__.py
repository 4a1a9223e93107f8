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

import importlib

from .. import experiments, runs
from ..errors import UserError

TRAINERS = {"image": "repr_sim.train.image", "text": "repr_sim.train.text",
            "partition": "repr_sim.train.partition", "vae": "repr_sim.train.vae"}
# Every per-kind option of `reprsim train` (argparse dest names, see cli.add_train).
OPTIONS = ("epochs", "iters", "batch_size", "block_size", "eval_iters", "lr", "workers")


def trainer(kind: str):
    if kind not in TRAINERS:
        known = ", ".join(sorted(TRAINERS))
        raise UserError(f"`reprsim train` does not train '{kind}' experiments (it trains: {known})")
    return importlib.import_module(TRAINERS[kind])


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


def cli_train(args) -> int:
    cfg = experiments.load(args.experiment, args.overrides)
    frac = experiments.check_frac(args.frac)
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    folder = runs.pair_dir(experiments.experiment_dir(cfg), args.seed, frac)
    if runs.is_done(folder):  # before importing any training stack: skipping is cheap
        print(f"{folder}: already trained, skipping")
        return 0
    module = trainer(cfg["kind"])
    apply_options(cfg, args, module.OPTION_KEYS)
    module.train_pair(cfg, args.seed, frac, device=args.device)
    return 0
