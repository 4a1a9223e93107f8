"""The image kind's attack hook (repr_sim.attack, `reprsim attack`): what MI-FGSM attacks in
a pair of ResNets trained from scratch (the v1 CIFAR/TinyImageNet kind, and the demo's).

Models: both checkpoints loaded as the measurement loads them (measure.load_model: the
trainer's architecture, width and head size from args.json), eval mode, fp32 (the attack
runs without the trainer's fp16 autocast). Probe: the experiment's test beton (every
image, the dataset's labels), or the test part of `attack.probe`; decoded once per process
(measure.cached_arrays), whatever the loader backend. Inputs: raw pixels normalised with
the training dataset's registry mean/std, as the trainer's and the measurement's loaders
do (data.loaders.Normalise), at the images' own side: the perturbation lives on that
normalised input, the valid range is the normalised images of pixel values 0 and 255.
eps: the study's (1/255 dataset, 2/255 task splits) unless attack.eps is set.
"""

from __future__ import annotations

from pathlib import Path

from ...data.loaders import Normalise
from ...errors import UserError
from ...scoring import SkipPair


def attacked(args: dict) -> bool:
    return True  # dataset and task splits both (the task split's shared classes)


def probe_arrays(args: dict, probe: str, cache: dict):
    from ...data import betons
    from .measure import cached_arrays
    from .train import beton

    if not probe:
        return cached_arrays(cache, beton(args["config"], "test"))
    path = betons.beton_path(probe, "test")
    if not path.is_file():
        raise UserError(f"missing attack probe beton {path} (attack.probe = {probe!r}): write it "
                        f"with `reprsim write-data`")
    return cached_arrays(cache, path)


def pair_models(pair_dir: Path, args: dict, device: str) -> list:
    from .measure import checkpoint_paths, load_model

    paths = checkpoint_paths(pair_dir)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SkipPair(f"missing checkpoint{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return [load_model(p, args["config"], int(n), device)
            for p, n in zip(paths, args["num_classes"], strict=True)]


def input_map(args: dict) -> Normalise:
    from .measure import mean_std

    mean, std = mean_std(args["config"]["dataset"])
    return Normalise(tuple(float(v) for v in mean), tuple(float(v) for v in std))
