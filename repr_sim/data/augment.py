"""The study's training augmentation (docs/protocol.md section 2): its settings, as FFCV transforms, in torch.

In this order: horizontal flip, brightness, contrast, saturation, translate, cutout (colour
jitter first so that the translate and cutout fill stays exactly the fill colour).
`ffcv_ops` builds it for FFCV's pipelines (make_loader); `augment_batch` is the same
augmentation on a uint8 batch in torch (ArrayLoader, DeviceLoader), with FFCV's arithmetic:
`draw` takes the random numbers from a CPU generator, `apply` does the work on any device.

Determinism: FFCV's augmentations draw from numba's per-thread generators, which cannot be
seeded from outside, so FFCV training batches differ from run to run; `augment_batch`
draws from the torch generator it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import registry

# ---- augmentation settings --------------------------------------------------------------------
# The study's CIFAR values (docs/protocol.md section 2); a config's [augment] table overrides any of them,
# and 0 switches one off. The fill is the CIFAR-10 mean as uint8, truncated as FFCV's CIFAR
# example does (125, 122, 113).
DEFAULT_AUGMENT = {"flip": 0.5, "brightness": 0.2, "contrast": 0.2, "saturation": 0.3,
                   "jitter_p": 0.3, "translate": 8, "cutout": 10, "fill": "mean"}


@dataclass(frozen=True)
class Augment:
    flip: float
    brightness: float
    contrast: float
    saturation: float
    jitter_p: float
    translate: int
    cutout: int
    fill: tuple[int, int, int]

    def jitters(self) -> list[tuple[str, float]]:
        if self.jitter_p <= 0:
            return []
        pairs = (("brightness", self.brightness), ("contrast", self.contrast),
                 ("saturation", self.saturation))
        return [(kind, m) for kind, m in pairs if m > 0]


def resolve_augment(augment: dict | None, mean=registry.MEAN) -> Augment:
    """The settings: the study's defaults updated with `augment` (unknown keys rejected)."""
    given = dict(augment or {})
    unknown = sorted(set(given) - set(DEFAULT_AUGMENT))
    if unknown:
        raise ValueError(f"unknown augmentation settings: {', '.join(unknown)} "
                         f"(known: {', '.join(DEFAULT_AUGMENT)})")
    cfg = {**DEFAULT_AUGMENT, **given}
    for key in ("flip", "jitter_p"):
        if not 0.0 <= float(cfg[key]) <= 1.0:
            raise ValueError(f"augment.{key} must be a probability in [0, 1], got {cfg[key]}")
    for key in ("brightness", "contrast", "saturation"):
        if float(cfg[key]) < 0:
            raise ValueError(f"augment.{key} must be >= 0, got {cfg[key]}")
    for key in ("translate", "cutout"):
        if isinstance(cfg[key], bool) or int(cfg[key]) != cfg[key] or int(cfg[key]) < 0:
            raise ValueError(f"augment.{key} must be a whole number of pixels >= 0, got {cfg[key]}")
    fill = cfg["fill"]
    if fill == "mean":
        fill = tuple(int(m) for m in mean)
    elif (not isinstance(fill, list | tuple) or len(fill) != 3
          or not all(isinstance(v, int) and 0 <= v <= 255 for v in fill)):
        raise ValueError(f"augment.fill must be 'mean' or three integers 0..255, got {fill!r}")
    return Augment(float(cfg["flip"]), float(cfg["brightness"]), float(cfg["contrast"]),
                   float(cfg["saturation"]), float(cfg["jitter_p"]), int(cfg["translate"]),
                   int(cfg["cutout"]), tuple(int(v) for v in fill))


# ---- as FFCV transforms -----------------------------------------------------------------------
def ffcv_ops(aug: Augment) -> list:
    """The settings as FFCV transforms (uint8 HWC images, before normalisation)."""
    from ffcv.transforms import (
        Cutout,
        RandomBrightness,
        RandomContrast,
        RandomHorizontalFlip,
        RandomSaturation,
        RandomTranslate,
    )

    jitter = {"brightness": RandomBrightness, "contrast": RandomContrast,
              "saturation": RandomSaturation}
    ops = [RandomHorizontalFlip(aug.flip)] if aug.flip > 0 else []
    ops += [jitter[kind](magnitude, p=aug.jitter_p) for kind, magnitude in aug.jitters()]
    if aug.translate > 0:
        ops.append(RandomTranslate(padding=aug.translate, fill=aug.fill))
    if aug.cutout > 0:
        ops.append(Cutout(aug.cutout, aug.fill))
    return ops


# ---- the same in torch -------------------------------------------------------------------------
def _blend(img, other, ratio):
    """FFCV's blend: ratio * img + (1 - ratio) * other, clipped, truncated to uint8."""
    out = ratio * img.float() + (1.0 - ratio) * other
    return out.clamp_(0, 255).to(img.dtype)


def _grey(x):
    r, g, b = x[..., 0].float(), x[..., 1].float(), x[..., 2].float()
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(x.dtype)  # truncated, as FFCV does


def draw(aug: Augment, b: int, h: int, w: int, gen) -> dict:
    """The random draws of one batch of `b` images of h x w, from the CPU generator `gen`.

    Drawn in a fixed order with sizes that do not depend on the data, so one (seed, epoch)
    gives the same draws whatever device `apply` then runs on (DeviceLoader).
    """
    import torch

    out = {}
    if aug.flip > 0:
        out["flip"] = torch.rand(b, generator=gen) < aug.flip
    for kind, magnitude in aug.jitters():
        apply_ = torch.rand(b, generator=gen) < aug.jitter_p
        low = max(0.0, 1.0 - magnitude)
        out[kind] = (apply_, low + (1.0 + magnitude - low) * torch.rand(b, generator=gen))
    if aug.translate > 0:
        p = aug.translate
        out["translate"] = (torch.randint(0, 2 * p + 1, (b,), generator=gen),
                            torch.randint(0, 2 * p + 1, (b,), generator=gen))
    if aug.cutout > 0:
        c = aug.cutout
        out["cutout"] = (torch.randint(0, h - c + 1, (b,), generator=gen),
                         torch.randint(0, w - c + 1, (b,), generator=gen))
    return out


def draws_to(draws: dict, device) -> dict:
    """The draws moved to `device` (one small copy per tensor, non-blocking)."""
    def move(v):
        return tuple(move(t) for t in v) if isinstance(v, tuple) else v.to(device, non_blocking=True)

    return {k: move(v) for k, v in draws.items()}


def apply(x, aug: Augment, draws: dict):
    """The augmentation with the given draws on a uint8 [B, H, W, 3] tensor, on its device.

    Batched and branch-free (no host synchronisation on CUDA): each step computes its result
    for every image and keeps it where the draw says so, which per image is the same as
    transforming only the selected images.
    """
    import torch

    b, h, w, _ = x.shape
    dev = x.device
    if "flip" in draws:
        x = torch.where(draws["flip"].view(-1, 1, 1, 1), x.flip(2), x)
    for kind, _magnitude in aug.jitters():
        chosen, ratio = draws[kind]
        r = ratio.view(-1, 1, 1, 1)
        if kind == "brightness":
            other = torch.zeros((), device=dev)
        elif kind == "contrast":
            other = _grey(x).float().mean(dim=(1, 2)).view(-1, 1, 1, 1)
        else:
            other = _grey(x).float().unsqueeze(-1)
        x = torch.where(chosen.view(-1, 1, 1, 1), _blend(x, other, r), x)
    fill = torch.tensor(aug.fill, dtype=x.dtype, device=dev)
    if "translate" in draws:
        # Output pixel (i, j) is pixel (i + dy - p, j + dx - p) of the image, the fill outside
        # it: FFCV's pad-then-crop without building the padded batch.
        p = aug.translate
        dy, dx = draws["translate"]
        rows = dy[:, None] - p + torch.arange(h, device=dev)  # [B, H]
        cols = dx[:, None] - p + torch.arange(w, device=dev)  # [B, W]
        inside = (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :])
        batch = torch.arange(b, device=dev)[:, None, None]
        x = x[batch, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
        x = torch.where(inside[..., None], x, fill)
    if "cutout" in draws:
        c = aug.cutout
        y0, x0 = draws["cutout"]
        ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
        inside = (((ys[None] >= y0[:, None]) & (ys[None] < y0[:, None] + c))[:, :, None]
                  & ((xs[None] >= x0[:, None]) & (xs[None] < x0[:, None] + c))[:, None, :])
        x = torch.where(inside[..., None], fill, x)
    return x


def augment_batch(x, aug: Augment, gen):
    """The study's augmentation on a uint8 [B, H, W, 3] tensor, with the draws from `gen`
    (a CPU generator; the work runs on x's device)."""
    b, h, w, _ = x.shape
    return apply(x, aug, draws_to(draw(aug, b, h, w, gen), x.device))
