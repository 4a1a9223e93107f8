"""`reprsim attack RUNS_DIR...`: MI-FGSM transfer attacks between the two models of each pair
(docs/protocol.md section 6.3), for every experiment kind with an attack hook (finetune,
image), resumable, merged into the study's CSV. One implementation for every kind: the
attack, the images, the per-pair result and its resumption, the CSVs, the CLI; a kind's
hook only says what its models, its probe and its model inputs are.

Attack (`mi_fgsm`, Dong et al. 2018, Algorithm 1): untargeted, L-infinity, white-box on the
source model in eval mode, fp32 (no autocast, on CUDA too); loss = mean cross-entropy
against the true labels; T steps (3) of size eps / T; momentum g <- mu g + grad /
max(||grad||_1 per image, 1e-8), mu = 1.0; x <- x + step sign(g), projected onto the
eps-ball around the clean input, then clipped to the valid range (the model inputs of
pixel values 0 and 255). No random start. The perturbation lives on the model input the
kind makes from raw pixels (finetune: upsampled and normalised, as in the study; image:
normalised with the dataset's mean/std, as its loaders do); eps is given on the 0-1 pixel
scale (attack.eps; 0 = the study's 1/255 for dataset splits, 2/255 for task splits) and
converted per channel by the input map's `eps_scale` (255 / std).

Images: `attack.images` (500) of the attack probe (attack.probe, default the experiment's
test beton; the study used the TinyImageNet val set), a subset seeded by (attack.seed,
pair seed, frac), the same for both directions (the study: an unseeded subset, one
direction). Dataset split: every class, original labels; task split: only images of the
shared classes, labels in the shared map (none at alpha 0: -1).

Rates per direction (A = split_0, B = split_1): `normal_asr` = fraction of the adversarial
images the source misclassifies, `transfer_asr` = fraction the target misclassifies (all
images, as the study), and both again over the images both models classify correctly when
clean. Per pair the result goes to `<pair>/attack.json` (atomic); a pair whose result
matches the attack settings and the checkpoints is not attacked again unless --force.
Then, per experiment: `transfer_attack.csv` (seed,frac_overlap,normal_asr,transfer_asr,
direction A -> B, values `%g`) and `transfer_attack_directions.csv` (both directions,
conditioned rates), written only when their bytes change, each with a `.json` sidecar like
the similarity file's (arch, model, dataset, kind of split), so that `reprsim
consequences FOLDER` pairs a copy of them with the similarity file's copy.

The hook: `repr_sim/kinds/<kind>/attack.py`, found through the registry (kinds.hook; a
one-file kind defines the same functions). Each function gets the pair's args.json with its
config resolved over the kind's defaults (which hold the `attack.*` keys: eps, steps,
momentum, images, batch_size, seed, probe):
- `attacked(args) -> bool`: whether the pair is attacked at all (label partitions are not);
- `probe_arrays(args, probe, cache) -> (images uint8 [N, h, w, 3], labels int64 [N])`: the
  test part of beton `probe` ("": the experiment's test set), with the dataset's labels;
- `pair_models(pair_dir, args, device) -> [A, B]`: eval mode, fp32 weights (SkipPair when a
  checkpoint is missing);
- `input_map(args)`: raw pixel batches [B, 3, h, w] (float 0-255, on the device) -> model
  inputs, with `bounds(device)` and `eps_scale(device)` (repr_sim.data.loaders.Normalised).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from . import kinds, results, runs, splits
from .errors import UserError
from .scoring import SkipPair, error, note, pair_label, warn

RESULT = "attack.json"
RESULT_VERSION = 1
LOCK = ".attack.lock"
STUDY_EPS = {"dataset": 1 / 255, "task": 2 / 255}
L1_FLOOR = 1e-8
HOOK, HOOK_MARKER = "attack", "pair_models"  # the kind's optional module (kinds.hook)


# ---- the attack -------------------------------------------------------------------------------
def mi_fgsm(model, x: torch.Tensor, labels: torch.Tensor, *, eps, steps: int, momentum: float,
            low, high) -> torch.Tensor:
    """MI-FGSM adversarial inputs for `model` around the clean inputs `x` (model-input scale).

    `eps`, `low`, `high`: scalars or tensors broadcasting against x (per channel)."""
    x = x.detach()
    eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    step = eps / steps
    g = torch.zeros_like(x)
    adv = x.clone()
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = loss_fn(model(adv), labels)
        grad, = torch.autograd.grad(loss, adv)
        l1 = grad.abs().flatten(1).sum(1).clamp_min(L1_FLOOR).view(-1, *([1] * (x.dim() - 1)))
        g = momentum * g + grad / l1
        adv = adv.detach() + step * g.sign()
        adv = torch.maximum(torch.minimum(adv, x + eps), x - eps)
        adv = torch.maximum(torch.minimum(adv, torch.as_tensor(high, device=x.device)),
                            torch.as_tensor(low, device=x.device))
    return adv.detach()


@dataclass(frozen=True)
class Settings:
    eps: float  # 0-1 pixel scale
    steps: int
    momentum: float
    images: int
    batch_size: int
    seed: int
    probe: str

    def record(self) -> dict:
        return dict(self.__dict__)


def settings(cfg: dict, images: int | None = None) -> Settings:
    """The attack settings of a resolved config (its `attack` table); `images` overrides."""
    a = cfg.get("attack", {})
    w = cfg.get("config_path", cfg.get("name"))
    missing = [f.name for f in fields(Settings) if f.name not in a]
    if missing:
        raise UserError(f"{w}: attack.{missing[0]} is not set (kind {cfg.get('kind')!r} declares "
                        f"no attack defaults)")
    eps = float(a["eps"]) or STUDY_EPS.get(cfg["split"], 0.0)
    for key in ("steps", "images", "batch_size"):
        if isinstance(a[key], bool) or not isinstance(a[key], int) or a[key] < 1:
            raise UserError(f"{w}: attack.{key} must be a positive integer, got {a[key]!r}")
    if eps < 0 or eps > 1:
        raise UserError(f"{w}: attack.eps must be in [0, 1] (0-1 pixel scale), got {a['eps']!r}")
    return Settings(eps, int(a["steps"]), float(a["momentum"]), int(images or a["images"]),
                    int(a["batch_size"]), int(a["seed"]), str(a["probe"]))


def chosen_images(n: int, size: int, seed: int, pair_seed: int, frac: float) -> np.ndarray:
    """The attacked positions: a seeded subset, the same for both directions."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([seed, pair_seed, int(round(frac * 1_000_000))])
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def pixel_batches(images: np.ndarray, batch_size: int, device: str):
    """Raw pixel batches [B, 3, h, w] (float32, 0-255) of uint8 images [N, h, w, 3], in order."""
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
        yield chunk.to(device).permute(0, 3, 1, 2).float()


def model_input(pipe, raw: torch.Tensor, device: str) -> torch.Tensor:
    x = pipe(raw)
    # the kinds' models are channels-last on CUDA (their trainers' layout); same numbers
    return x.contiguous(memory_format=torch.channels_last) if device == "cuda" else x


def attack_direction(source, target, pipe, images: np.ndarray, labels: np.ndarray, s: Settings,
                     device: str) -> dict:
    """Success rates of source -> target over the given images (raw pixels), in batches."""
    eps = s.eps * pipe.eps_scale(device)
    low, high = pipe.bounds(device)
    fooled = {"source": [], "target": []}
    clean = {"source": [], "target": []}
    start = 0
    for raw in pixel_batches(images, s.batch_size, device):
        y = torch.as_tensor(labels[start:start + len(raw)], device=device)
        start += len(raw)
        x = model_input(pipe, raw, device)
        adv = mi_fgsm(source, x, y, eps=eps, steps=s.steps, momentum=s.momentum, low=low, high=high)
        with torch.no_grad():
            for who, model in (("source", source), ("target", target)):
                clean[who].append((model(x).argmax(1) == y).cpu())
                fooled[who].append((model(adv).argmax(1) != y).cpu())
    fooled = {k: torch.cat(v) for k, v in fooled.items()}
    both = torch.cat(clean["source"]) & torch.cat(clean["target"])
    n_both = int(both.sum())

    def rate(mask):
        return float(mask.float().mean()) if len(mask) else results.EMPTY

    return {"images": len(images), "both_correct": n_both,
            "normal_asr": rate(fooled["source"]), "transfer_asr": rate(fooled["target"]),
            "normal_asr_both_correct": rate(fooled["source"][both]) if n_both else results.EMPTY,
            "transfer_asr_both_correct": rate(fooled["target"][both]) if n_both else results.EMPTY}


# ---- the kind's hook ----------------------------------------------------------------------------
def attack_kinds() -> list[str]:
    """The kinds with an attack hook (for the error message: a kind that fails to import
    is left out, not reported here)."""
    found = []
    for kind in kinds.names():
        try:
            if kinds.hook(kind, HOOK, HOOK_MARKER) is not None:
                found.append(kind)
        except UserError:
            continue
    return found


def has_attack(kind: str) -> bool:
    """Whether `reprsim attack` can attack pairs of `kind` (it has the hook)."""
    return kinds.hook(kind, HOOK, HOOK_MARKER) is not None


def hook_of(kind, where) -> object:
    """The attack hook of `kind`; a kind without one is a UserError naming those with one."""
    found = kinds.hook(kind, HOOK, HOOK_MARKER)
    if found is None:
        raise UserError(f"{where}: kind {kind!r} has no transfer attack (`reprsim attack` "
                        f"attacks kinds {', '.join(attack_kinds())})")
    return found


def pair_args(pair_dir: Path) -> dict:
    """args.json, its config resolved over the kind's defaults: a pair trained before its
    kind declared the `attack.*` keys gets them."""
    args = runs.read_json(pair_dir / "args.json")
    return {**args, "config": kinds.get(args.get("kind")).resolve(args["config"])}


# ---- one pair ---------------------------------------------------------------------------------
def attack_set(split, images: np.ndarray, labels: np.ndarray):
    """(images, labels) that may be attacked: the probe's, for a task split only the shared
    classes' with their labels in the shared map."""
    if split.kind != "task":
        return images, labels
    idx = splits.class_indices(labels, split.shared_classes)
    label_map = dict(split.label_map_a)  # shared classes map identically in both models
    return images[idx], (splits.relabel(labels[idx], label_map) if len(idx) else labels[idx])


def attack_pair(pair_dir: Path, args: dict, hook, s: Settings, device: str, cache: dict) -> dict:
    split = splits.load(pair_dir / "split_indices")
    images, labels = attack_set(split, *hook.probe_arrays(args, s.probe, cache))
    pos = chosen_images(len(labels), s.images, s.seed, int(args["seed"]), float(args["frac"]))
    empty = dict.fromkeys(("normal_asr", "transfer_asr", "normal_asr_both_correct",
                           "transfer_asr_both_correct"), results.EMPTY)
    if len(pos) == 0:  # a task split with no shared class
        rows = {d: {"images": 0, "both_correct": 0, **empty} for d in ("A->B", "B->A")}
    else:
        a, b = hook.pair_models(pair_dir, args, device)
        pipe = hook.input_map(args)
        x, y = images[pos], labels[pos]
        rows = {"A->B": attack_direction(a, b, pipe, x, y, s, device),
                "B->A": attack_direction(b, a, pipe, x, y, s, device)}
    return {"overlap": float(split.overlap), "directions": rows}


def wanted(pair_dir: Path, args: dict, s: Settings) -> dict:
    sig = {}  # checkpoint -> [size, mtime]: a retrained model makes the result stale
    paths = runs.checkpoints(pair_dir) or kinds.module(args["kind"], "measure").inputs(pair_dir, args)
    for p in map(Path, paths):
        if p.is_file():
            key = str(p.relative_to(pair_dir)) if p.is_relative_to(pair_dir) else str(p)
            sig[key] = [p.stat().st_size, p.stat().st_mtime_ns]
    return {"version": RESULT_VERSION, "settings": s.record(), "inputs": sig}


def read_result(pair_dir: Path) -> dict | None:
    path = pair_dir / RESULT
    if not path.is_file():
        return None
    try:
        result = runs.read_json(path)
    except (OSError, ValueError):
        note(f"{pair_label(pair_dir)}: unreadable {RESULT}; attacking again")
        return None
    return result if isinstance(result, dict) and "directions" in result else None


def is_current(result: dict | None, want: dict) -> bool:
    return result is not None and all(result.get(k) == v for k, v in want.items())


def handle(pair_dir: Path, device: str, force: bool, images: int | None, cache: dict) -> str:
    """'attacked', 'kept' or 'skipped' for one pair (under its lock)."""
    args = pair_args(pair_dir)
    hook = hook_of(args.get("kind"), pair_dir)
    if not hook.attacked(args):
        return "skipped"
    s = settings(args["config"], images)
    with runs.file_lock(pair_dir / LOCK):
        runs.remove_temporaries(pair_dir, RESULT)
        want = wanted(pair_dir, args, s)
        if not force and is_current(read_result(pair_dir), want):
            return "kept"
        started = time.perf_counter()
        out = attack_pair(pair_dir, args, hook, s, device, cache)
        result = {**want, "seed": int(args["seed"]), "frac": float(args["frac"]), **out,
                  "seconds": round(time.perf_counter() - started, 3)}
        runs.atomic_write_json(pair_dir / RESULT, result)
    ab = out["directions"]["A->B"]
    note(f"{pair_label(pair_dir)}: A->B normal {ab['normal_asr']:g}, transfer "
         f"{ab['transfer_asr']:g} ({result['seconds']:.1f} s)")
    return "attacked"


# ---- the experiment -------------------------------------------------------------------------
def fmt(value: float) -> str:
    return f"{value:g}"  # the study writes %g


def merge(folder: Path, images: int | None) -> int:
    """Both CSVs from every current per-pair result; returns the pairs merged."""
    study, both, meta = [], [], None
    for _seed, _frac, pair_dir in runs.iter_pairs(folder):
        result = read_result(pair_dir)
        if result is None or not (pair_dir / "args.json").is_file():
            continue
        args = pair_args(pair_dir)
        if not is_current(result, wanted(pair_dir, args, settings(args["config"], images))):
            continue
        meta = meta or sidecar(args)
        seed, overlap = str(result["seed"]), repr(float(result["overlap"]))
        eps = fmt(result["settings"]["eps"])
        ab = result["directions"]["A->B"]
        study.append([seed, overlap, fmt(ab["normal_asr"]), fmt(ab["transfer_asr"])])
        for name, d in result["directions"].items():
            both.append([seed, overlap, name, eps, str(d["images"]), str(d["both_correct"]),
                         *(fmt(d[k]) for k in results.TRANSFER_DIRECTIONS_COLUMNS[6:])])
    if not study:
        return 0
    with runs.file_lock(folder / LOCK):
        for name, header, rows in ((results.TRANSFER_ATTACK_CSV, results.ASR_COLUMNS, study),
                                   (results.TRANSFER_DIRECTIONS_CSV,
                                    results.TRANSFER_DIRECTIONS_COLUMNS, both)):
            text = "\n".join([",".join(header), *(",".join(r) for r in rows)]) + "\n"
            runs.write_if_changed(folder / name, text.encode("utf-8"))
            runs.write_if_changed((folder / name).with_suffix(".json"), runs.json_bytes(meta))
    return len(study)


def sidecar(args: dict) -> dict:
    """What the transfer files are (the similarity file's sidecar: arch, model, dataset,
    kind of split), so that the analysis pairs them with it by metadata, under any name."""
    measure = kinds.module(args["kind"], "measure")
    return {**measure.sidecar(args), "experiment": args.get("experiment")}


def check_folder(folder: Path) -> None:
    """An experiment folder whose pairs are of a kind with an attack hook (else UserError)."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such experiment folder")
    pairs = [p for _, _, p in runs.iter_pairs(folder) if (p / "args.json").is_file()]
    if not pairs:
        raise UserError(f"{folder}: not an experiment folder (no seed_*/frac_* pairs with args.json)")
    found = set()
    for p in pairs:
        try:
            found.add(runs.read_json(p / "args.json").get("kind"))
        except (OSError, ValueError):
            continue  # reported with its pair
    for kind in sorted(found, key=str):
        hook_of(kind, folder)


def attack_experiment(folder: Path, device: str, force: bool = False, images: int | None = None,
                      cache: dict | None = None) -> tuple[int, int]:
    """Attack every finished pair of one experiment folder and merge the CSVs; returns
    (pairs in transfer_attack.csv, pairs that failed). `images` overrides attack.images;
    `cache` keeps decoded probe sets across calls."""
    folder = Path(folder)
    check_folder(folder)
    cache = {} if cache is None else cache
    counts = {"attacked": 0, "kept": 0, "skipped": 0, "failed": 0, "unfinished": 0}
    for _seed, _frac, pair_dir in runs.iter_pairs(folder):
        if not (pair_dir / "args.json").is_file():
            continue
        if not runs.is_finished(pair_dir):
            counts["unfinished"] += 1
            note(f"{pair_label(pair_dir)}: not finished; skipped for now")
            continue
        try:
            counts[handle(pair_dir, device, force, images, cache)] += 1
        except SkipPair as e:
            counts["skipped"] += 1
            warn(f"{pair_label(pair_dir)}: {e}; pair skipped")
        except (UserError, ValueError, OSError) as e:
            counts["failed"] += 1
            error(f"{pair_label(pair_dir)}: {e}")
    merged = merge(folder, images)
    note(f"{folder}: {counts['attacked']} attacked, {counts['kept']} already attacked, "
         f"{counts['skipped']} skipped, {counts['failed']} failed, {counts['unfinished']} "
         f"unfinished; {merged} pair(s) in {results.TRANSFER_ATTACK_CSV}")
    return merged, counts["failed"]


def cli_attack(args) -> int:
    from .measure import resolve_device
    from .paths import usable_cpus

    if args.images is not None and args.images < 1:
        raise UserError(f"--images must be a positive integer, got {args.images}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be a positive integer, got {args.workers}")
    torch.set_num_threads(int(args.workers or usable_cpus()))
    device = resolve_device(args.device)
    folders = [Path(f) for f in args.runs_dirs]
    for folder in folders:  # all checked before any work
        check_folder(folder)
    cache: dict = {}
    merged = failed = 0
    for folder in folders:
        m, f = attack_experiment(folder, device, args.force, args.images, cache)
        merged, failed = merged + m, failed + f
    return 2 if failed and not merged else 0
