"""The fine-tuning kind's attack hook (repr_sim.attack, `reprsim attack`; docs/protocol.md
section 6.3): what MI-FGSM attacks in a fine-tuned pair.

Models: both fine-tuned timm models as the measurement loads them (measure.models_of), eval
mode, fp32. Probe: the test part of the experiment's beton, or of `attack.probe`. Inputs:
the experiment's pipeline (train.pipeline: upsampled to input_size on the device, then
normalised, the study's mean = std = 127 or the weights' own), so the perturbation lives on
the upsampled, normalised input, as in the study. Label partitions are not attacked.
"""

from __future__ import annotations

from pathlib import Path


def attacked(args: dict) -> bool:
    return args["config"]["split"] != "partition"


def probe_arrays(args: dict, probe: str, cache: dict):
    from .measure import cached_arrays
    from .train import beton

    return cached_arrays(cache, beton(args["config"], "test", probe or None))


def pair_models(pair_dir: Path, args: dict, device: str) -> list:
    from .measure import models_of

    return models_of(Path(pair_dir), args, device)


def input_map(args: dict):
    from .train import pipeline

    return pipeline(args["config"])
