"""Experiments are TOML config files: dataset, split kind, fractions, seeds, recipe.

An experiment lists only what differs from its kind's defaults (repr_sim.kinds: the
kind's declaration holds them); `repr_sim.kinds.load` merges the two. They live in the training folders (`<folder>/configs/<name>.toml`) and, for the built-in
demo, inside the package (`repr_sim/configs/<name>.toml`); they are found by name from any
working directory, or given as a path. `--set key.sub=value` overrides any key;
the value is parsed as TOML (numbers, booleans, lists), else kept as a string.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

from . import runs
from .errors import UserError
from .paths import PACKAGE_DIR, repo_root, runs_root, source_root

REQUIRED = ("kind", "fracs", "seeds")


def _search_roots() -> list[Path]:
    roots = [r for r in (source_root(), repo_root()) if r is not None]
    return list(dict.fromkeys(roots))  # unique, in order


# Configs shipped inside the package (the built-in demo's), found from an installed package too.
PACKAGE_CONFIGS = PACKAGE_DIR / "configs"


def config_paths() -> dict[str, Path]:
    """Every experiment config that can be found by name: name -> path."""
    found: dict[str, Path] = {}
    for root in _search_roots():  # the training folders: train_cifar_ffcv/, llm_finetune/, ...
        for path in sorted(root.glob("*/configs/*.toml")):
            if not path.parts[-3].startswith("."):
                found.setdefault(path.stem, path)
    for path in sorted(PACKAGE_CONFIGS.glob("*.toml")):
        found.setdefault(path.stem, path)
    return found


def find_config(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.is_file():
        if not candidate.is_file():
            raise UserError(f"experiment config not found: {candidate}")
        return candidate.resolve()
    known = config_paths()
    if str(name_or_path) not in known:
        names = ", ".join(sorted(known)) or "none found"
        raise UserError(f"unknown experiment '{name_or_path}' (known: {names})")
    return known[str(name_or_path)]


def merge(base: dict, over: dict) -> dict:
    """`over` merged onto `base`, tables recursively (values, lists included, replaced)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_key(cfg: dict, key: str, value, where: str = "--set") -> None:
    """Set a dotted key in place (`recipe.epochs`, 2): the one config setter."""
    parts = key.strip().split(".")
    node = cfg
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"{where} {key}: '{part}' is not a table in the config")
        node = child
    node[parts[-1]] = value


def apply_override(cfg: dict, assignment: str) -> None:
    """Set a dotted key in place from text: `recipe.epochs=2`."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set expects key=value, got '{assignment}'")
    set_key(cfg, key, parse_value(value.strip()))


def validate(cfg: dict, source: str) -> dict:
    for key in REQUIRED:
        if key not in cfg:
            raise UserError(f"{source}: missing key '{key}'")
    for frac in cfg["fracs"]:
        if not isinstance(frac, int | float) or not 0.0 <= float(frac) <= 1.0:
            raise UserError(f"{source}: fraction {frac!r} outside [0, 1]")
    for seed in cfg["seeds"]:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise UserError(f"{source}: seed {seed!r} is not an integer")
    return cfg


def read(name_or_path: str | Path) -> dict:
    """A config file's contents, `name` and `config_path` filled in (no defaults, no checks)."""
    path = find_config(name_or_path)
    try:
        cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e})") from None
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("name", path.stem)
    cfg["config_path"] = str(path)
    return cfg


def load(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = (),
         resolve=None) -> dict:
    """The resolved config: the file read, `resolve(cfg)` (the kind's defaults merged under
    it: repr_sim.kinds.load passes it), the overrides set, checked."""
    cfg = read(name_or_path)
    if resolve is not None:
        cfg = resolve(cfg)
    for assignment in overrides:
        apply_override(cfg, assignment)
    return validate(cfg, cfg["config_path"])


def experiment_dir(cfg: dict) -> Path:
    return runs_root() / cfg["name"]


def pair_folder(cfg: dict, seed: int, frac: float) -> Path:
    """The run folder of pair (seed, frac) of experiment `cfg`."""
    return runs.pair_dir(experiment_dir(cfg), seed, frac)


def check_frac(frac: float) -> float:
    frac = float(frac)
    if not 0.0 <= frac <= 1.0:
        raise UserError(f"fraction {frac:g} outside [0, 1]")
    return frac


def tasks(cfg: dict, seeds=None, fracs=None) -> list[tuple[int, float]]:
    """The sweep's (seed, frac) pairs, seeds outer, optionally narrowed."""
    seeds = cfg["seeds"] if seeds is None else [int(s) for s in seeds]
    fracs = cfg["fracs"] if fracs is None else [check_frac(f) for f in fracs]
    return [(int(s), float(f)) for s in seeds for f in fracs]
