"""The registry of experiment kinds: the only list of kinds in the project.

A kind is one declaration (`KIND = Kind(...)`, repr_sim.kinds.base) in a package
`repr_sim.kinds.<kind>` (its `train` and `measure` modules beside it) or in one module
that holds everything (its `KIND`, `prepare_pair`/`train_pair`/`OPTION_KEYS` and the
measurement functions). The registry finds the kinds in this package by themselves and
adds the modules named in $REPRSIM_KINDS (comma-separated importable module names, for a
kind kept outside the project). A kind may also have optional modules (`hook`): `attack`,
its models and probe for `reprsim attack` (repr_sim.attack; image and finetune have one).
Everything that dispatches on a kind (the CLI, `reprsim train`, the sweep, `reprsim
measure`, `reprsim attack`, the demo) asks here, so adding a kind is one new package or
file plus its configs. Kinds are imported on first use: image work never loads
the text stack and the other way round.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from pathlib import Path

from .. import experiments
from ..errors import UserError

# Modules of this package that are not kinds.
_NOT_KINDS = {"base", "schedule"}


def _external() -> dict[str, str]:
    """Kinds named in $REPRSIM_KINDS: kind name (the module's last part) -> module."""
    names = [m.strip() for m in os.environ.get("REPRSIM_KINDS", "").split(",") if m.strip()]
    return {m.rsplit(".", 1)[-1]: m for m in names}


def _modules() -> dict[str, str]:
    found = {m.name: f"{__name__}.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent)])
             if m.name not in _NOT_KINDS and not m.name.startswith("_")}
    return {**found, **_external()}


def names() -> tuple[str, ...]:
    return tuple(sorted(_modules()))


def _import(kind: str):
    modules = _modules()
    if kind not in modules:
        raise UserError(f"unknown experiment kind {kind!r} (known: {', '.join(names())})")
    try:
        return importlib.import_module(modules[kind])
    except ModuleNotFoundError as e:
        raise UserError(f"experiment kind {kind!r}: cannot import {modules[kind]} ({e})") from None


def get(kind: str):
    """The declaration of `kind` (its module's KIND)."""
    return _import(kind).KIND


def module(kind: str, part: str):
    """The `train` or `measure` module of a kind (the kind's own module for a one-file kind)."""
    top = _import(kind)
    if hasattr(top, "__path__"):  # a package: its train/measure modules
        return importlib.import_module(f"{top.__name__}.{part}")
    return top


def hook(kind: str, part: str, marker: str):
    """A kind's optional module `part` (e.g. "attack": repr_sim/kinds/<kind>/attack.py), or
    None when the kind has none; a one-file kind has it when it defines `marker`."""
    top = _import(kind)
    if not hasattr(top, "__path__"):
        return top if hasattr(top, marker) else None
    name = f"{top.__name__}.{part}"
    # find_spec, not a caught ModuleNotFoundError: a hook that fails to import must say so
    return importlib.import_module(name) if importlib.util.find_spec(name) else None


def resolve(cfg: dict) -> dict:
    """A config read from a file, with its kind's defaults under it."""
    where = cfg.get("config_path", cfg.get("name", "config"))
    if "kind" not in cfg:
        raise UserError(f"{where}: missing key 'kind'")
    if cfg["kind"] not in _modules():
        raise UserError(f"{where}: kind must be one of {', '.join(names())}, got '{cfg['kind']}'")
    return get(cfg["kind"]).resolve(cfg)


def load(name_or_path, overrides=()) -> dict:
    """An experiment's config: the TOML over its kind's defaults, then `--set` overrides."""
    return experiments.load(name_or_path, overrides, resolve=resolve)
