"""`reprsim sample CHECKPOINT`: what a trained model generates, by the checkpoint's kind.

A diffusion checkpoint (`split_<i>/ckpt.pth` of a pair whose args.json says kind
"diffusion") gives a PNG grid: one row per class (the model's own class ids), `--per-class`
images each, sampled with DDIM (`--ddim-steps`, default the config's sampling.steps = 50,
eta sampling.eta = 0) and classifier-free guidance eps_u + g (eps_c - eps_u) with the null
class id (`--guidance`, default sampling.guidance = 3.0, the study's sanity check), from
noise seeded by `--seed`. Any other checkpoint goes to the GPT text sampler
(repr_sim.kinds.text.train.cli_sample) unchanged.

`--fid N`: FID of N samples (random classes) against the experiment's test set, with
pytorch-fid when it is installed and its Inception weights are in the local torch hub
cache (nothing is downloaded); otherwise one line says why it is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ... import runs
from ...atomic import atomic_path
from ...errors import UserError

FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's Inception, in torch hub


def diffusion_run(checkpoint: Path) -> dict | None:
    """The args.json of the pair a diffusion checkpoint belongs to; None for another kind."""
    run_args = checkpoint.resolve().parent.parent / "args.json"
    if run_args.is_file():
        try:
            args = runs.read_json(run_args)
        except (OSError, ValueError, json.JSONDecodeError):
            return None
        return args if args.get("kind") == "diffusion" else None
    if checkpoint.suffix == ".pth" and checkpoint.is_file():
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception:
            return None
        if isinstance(state, dict) and "conv_norm_out.weight" in state:
            raise UserError(f"{checkpoint}: a diffusion UNet checkpoint outside its pair folder "
                            f"(no {run_args}): its configuration is unknown")
    return None


def cli_sample(args) -> int:
    checkpoint = Path(args.checkpoint)
    run = diffusion_run(checkpoint)
    if run is None:
        from ..text.train import cli_sample as text_sample

        return text_sample(args)
    return sample_grid(checkpoint, run, args)


def model_index(checkpoint: Path) -> int:
    name = checkpoint.resolve().parent.name
    if not name.startswith("split_") or not name[6:].isdigit():
        raise UserError(f"{checkpoint}: not in a split_<i>/ folder of a pair")
    return int(name[6:])


@torch.no_grad()
def ddim_sample(model, labels: torch.Tensor, null_id: int, *, steps: int, guidance: float,
                eta: float, generator: torch.Generator, device: str) -> torch.Tensor:
    """Images [N, 3, H, W] in [-1, 1] for class ids `labels` (DDIM with guidance)."""
    from diffusers import DDIMScheduler

    from ...models import unet as unet_model

    scheduler = DDIMScheduler.from_config(unet_model.make_scheduler().config)
    scheduler.set_timesteps(steps)
    side = int(model.config.sample_size)
    x = torch.randn((len(labels), 3, side, side), generator=generator).to(device)
    cond = labels.to(device)
    null = torch.full_like(cond, null_id)
    for t in scheduler.timesteps:
        both = model(torch.cat([x, x]), t.to(device), class_labels=torch.cat([cond, null])).sample
        eps_c, eps_u = both.chunk(2)
        eps = eps_u + guidance * (eps_c - eps_u)
        x = scheduler.step(eps, t, x, eta=eta, generator=generator).prev_sample
    return x.clamp(-1, 1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    pixels = ((x.cpu().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def grid(images: np.ndarray, columns: int, pad: int = 2) -> np.ndarray:
    """uint8 [N, H, W, 3] -> one uint8 image, `columns` per row, white padding."""
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        out[top:top + h, left:left + w] = img
    return out


def write_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def sample_grid(checkpoint: Path, run: dict, args) -> int:
    from ..image.train import resolve_device
    from .measure import load_unet

    cfg = run["config"]
    i = model_index(checkpoint)
    classes = int(run["num_classes"][i])
    sampling = {**cfg.get("sampling", {})}
    steps = args.ddim_steps if args.ddim_steps is not None else int(sampling.get("steps", 50))
    guidance = args.guidance if args.guidance is not None else float(sampling.get("guidance", 3.0))
    if steps < 1 or args.per_class < 1:
        raise UserError("--ddim-steps and --per-class must be positive")
    device = resolve_device(args.device)
    model = load_unet(checkpoint, cfg, classes, device)
    generator = torch.Generator().manual_seed(int(args.seed))
    labels = torch.arange(classes).repeat_interleave(args.per_class)
    common = dict(steps=steps, guidance=guidance, eta=float(sampling.get("eta", 0.0)),
                  generator=generator, device=device)
    print(f"sampling {len(labels)} images ({classes} classes x {args.per_class}), DDIM {steps} "
          f"steps, guidance {guidance:g}")
    images = to_uint8(ddim_sample(model, labels, classes, **common))
    out = Path(args.out) if args.out else checkpoint.parent / f"samples_seed{args.seed}.png"
    write_png(grid(images, args.per_class), out)
    print(f"wrote {out}")
    if args.fid:
        fid_line(model, cfg, classes, args.fid, common)
    return 0


def fid_weights() -> Path | None:
    """pytorch-fid's Inception weights in the local torch hub cache, if there."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS
    return path if path.is_file() else None


def fid_line(model, cfg: dict, classes: int, n: int, common: dict) -> None:
    """Print the FID of n samples against the test set, or one line saying why not."""
    try:
        from pytorch_fid.fid_score import calculate_frechet_distance
        from pytorch_fid.inception import InceptionV3
    except ImportError:
        print("FID skipped: pytorch-fid is not installed (pip install pytorch-fid)")
        return
    if fid_weights() is None:
        print(f"FID skipped: no Inception weights {FID_WEIGHTS} under "
              f"{Path(torch.hub.get_dir()) / 'checkpoints'} (nothing is downloaded)")
        return
    from .measure import cached_test
    from .train import beton_path

    device = common["device"]
    inception = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()
    labels = torch.randint(0, classes, (n,), generator=common["generator"])
    fake = torch.cat([ddim_sample(model, labels[s:s + 100], classes, **common)
                      for s in range(0, n, 100)])
    real, _ = cached_test({}, beton_path(cfg, "test"))

    def stats(x: torch.Tensor):
        acts = []
        with torch.no_grad():
            for s in range(0, len(x), 100):
                acts.append(inception(((x[s:s + 100] + 1) / 2).to(device))[0].flatten(1).cpu())
        a = torch.cat(acts).double().numpy()
        return a.mean(0), np.cov(a, rowvar=False)

    fid = calculate_frechet_distance(*stats(fake), *stats(real))
    print(f"FID ({n} samples against {len(real)} test images): {fid:.2f}")
