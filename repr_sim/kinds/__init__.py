"""The registry of experiment kinds: the only list of kinds in the project.

A kind is a package `repr_sim.kinds.<kind>` whose `__init__` declares it (see
repr_sim.kinds.base.Kind); its `train` module trains one pair and its `measure` module
measures one. Everything that dispatches on a kind (the CLI, `reprsim train`, the sweep,
`reprsim measure`, the demo) reads this registry; adding a kind is one new package here
plus its configs. Kinds are imported on first use, so image work never loads the text
stack and the other way round.
"""

from __future__ import annotations

import importlib
import importlib.util

from .. import experiments
from ..errors import UserError

KINDS = ("image", "text", "partition", "vae")


def names() -> tuple[str, ...]:
    return KINDS


def get(kind: str):
    """The declaration of `kind` (its package's KIND object)."""
    if kind not in KINDS:
        raise UserError(f"unknown experiment kind {kind!r} (known: {', '.join(KINDS)})")
    return importlib.import_module(f"{__name__}.{kind}").KIND


def module(kind: str, part: str):
    """The `train` or `measure` module of a kind."""
    get(kind)
    return importlib.import_module(f"{__name__}.{kind}.{part}")


def resolve(cfg: dict) -> dict:
    """A config read from a file, with its kind's defaults under it."""
    where = cfg.get("config_path", cfg.get("name", "config"))
    if "kind" not in cfg:
        raise UserError(f"{where}: missing key 'kind'")
    if cfg["kind"] not in KINDS:
        raise UserError(f"{where}: kind must be one of {', '.join(KINDS)}, got '{cfg['kind']}'")
    return get(cfg["kind"]).resolve(cfg)


def load(name_or_path, overrides=()) -> dict:
    """An experiment's config: the TOML over its kind's defaults, then `--set` overrides."""
    return experiments.load(name_or_path, overrides, resolve=resolve)
