"""What an experiment kind declares (one `KIND = Kind(...)` in repr_sim/kinds/<kind>/__init__.py).

A kind is everything that differs between experiments of one sort (ResNets on images,
GPTs on text, label partitions, VAEs, ...):

- `defaults`: its config keys and their values; an experiment TOML lists only what it
  changes (repr_sim.kinds.load merges the file over these, nanoGPT's style);
- `data`: how its data is built (the command a user runs; repr_sim.data does the work);
- its `train` module: `prepare_pair(cfg, seed, frac, device) -> repr_sim.pair.PairJob` (how to
  train each model of one pair; the generic driver repr_sim.pair.train does the rest) and
  `train_pair(cfg, seed, frac, *, device)`, plus OPTION_KEYS (CLI option -> config key);
- its `measure` module: `csv_files(args)`, `sidecar(args)`, `inputs(pair_dir, args)` and
  `measure_pair(pair_dir, args, opts, cache)` (see repr_sim.measure);
- optionally its `attack` module, the hook of `reprsim attack` (see repr_sim.attack), with
  an `[attack]` table in `defaults`;
- `outputs`: its result files (names from repr_sim.results) and the study's names for them
  in a results folder;
- `preload`: modules a pool worker imports once before its first job (repr_sim.sweep).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import results
from ..experiments import merge


@dataclass(frozen=True)
class Output:
    """One result file of a kind: its name in the experiment folder, and the suffix of its
    name in a results folder (`<experiment><suffix>.csv`, e.g. demo_ds_platonic_acc.csv)."""

    file: str
    suffix: str


# The study's pairs of result files: similarity, then accuracy or loss per model.
IMAGE_OUTPUTS = (Output(results.IMAGE_SIM_CSV, "_platonic"),
                 Output(results.IMAGE_ACC_CSV, "_platonic_acc"))
VAE_OUTPUTS = (Output(results.IMAGE_SIM_CSV, "_platonic"),
               Output(results.VAE_LOSS_CSV, "_platonic_loss"))
TEXT_OUTPUTS = (Output(results.TEXT_SIM_CSV, "_platonic"),
                Output(results.TEXT_LOSS_CSV, "_platonic_loss"))


@dataclass(frozen=True)
class Kind:
    name: str
    description: str
    defaults: dict
    outputs: tuple[Output, ...]  # the similarity file first, then the per-model file
    data: str = ""  # how to build the data (shown by `reprsim kinds`, docs/extending.md)
    default_probe_size: int | None = None  # inputs per probe set (None: whole sets)
    preload: tuple[str, ...] = field(default_factory=tuple)

    def resolve(self, cfg: dict) -> dict:
        """The config with this kind's defaults under what it lists (a new dict)."""
        return merge(self.defaults, cfg)
