"""A GPT language model written for this project (the study's nanoGPT runs, docs/protocol.md section 2).

Decoder-only transformer: token + learned position embeddings, `n_layer` pre-layer-norm
blocks (causal self-attention through `torch.nn.functional.scaled_dot_product_attention`,
then a 4x GELU MLP, each added to the residual stream), a final layer norm, and an output
head tied to the token embedding. Initialisation follows GPT-2: normal(0, 0.02) for
weights, zero biases, and the two projections that write into the residual stream scaled
by 1/sqrt(2 * n_layer) so the stream's variance does not grow with depth.

Checkpoints are plain dicts of tensors and JSON-able values (`checkpoint_dict`), so they
load with `torch.load(..., weights_only=True)` (`load_checkpoint`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

ARCH = "gpt"


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int  # rows of the embedding (the tokenizer's vocabulary, padded; see padded_vocab)
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPT {name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"GPT n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"GPT dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_dict(cls, args: dict) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(f"unknown GPT argument(s): {', '.join(unknown)}")
        return cls(**args)


def padded_vocab(n_vocab: int, multiple: int = 64) -> int:
    """Embedding rows for a tokenizer of `n_vocab` tokens: rounded up for faster matmuls.

    The extra rows are never targets; `GPT.generate` masks them out.
    """
    return ((int(n_vocab) + multiple - 1) // multiple) * multiple


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = float(cfg.dropout)
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.proj.writes_residual = True  # scaled init, see GPT._init_weights
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        # [B, T, C] -> [B, heads, T, head_dim]
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.proj.writes_residual = True
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied: one matrix reads and writes tokens
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "writes_residual", False):
                std = 0.02 / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.pos_emb.weight.numel() if non_embedding else n

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """The last hidden state after the final layer norm: [B, T, n_embd]."""
        _, t = idx.shape
        if t > self.config.block_size:
            raise ValueError(f"sequence of {t} tokens is longer than block_size {self.config.block_size}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """(logits [B, T, vocab], mean cross-entropy or None)."""
        logits = self.lm_head(self.hidden(idx))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def optimizer(self, *, lr: float, weight_decay: float, betas, device_type: str):
        """AdamW with weight decay on the 2-D weights only (matmuls and embeddings).

        Biases and layer-norm gains are not decayed. The tied embedding appears once.
        """
        params = [p for p in self.parameters() if p.requires_grad]  # unique (tied once)
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        fused = device_type == "cuda"
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=fused)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        n_vocab: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append `max_new_tokens` sampled tokens to idx [B, T] (context cropped to block_size).

        `n_vocab`: the tokenizer's real vocabulary; padded embedding rows are never sampled.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size :]
            logits, _ = self(context)
            logits = logits[:, -1, :].float() / temperature
            if n_vocab is not None and n_vocab < logits.size(-1):
                logits[:, n_vocab:] = -float("inf")
            if top_k is not None and top_k > 0:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                logits[logits < kth] = -float("inf")
            probs = torch.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx


def unwrap(model: nn.Module) -> nn.Module:
    """The GPT inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):  # DistributedDataParallel
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def build_gpt(**model_args) -> GPT:
    return GPT(GPTConfig.from_dict(model_args))


def build_for_registry(num_classes: int, **model_args) -> GPT:
    """repr_sim.models.build("gpt", vocab_size, **GPTConfig fields)."""
    return build_gpt(vocab_size=num_classes, **model_args)


@torch.no_grad()
def text_features(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """Mean over the block of the last hidden state after the final layer norm: [B, n_embd].

    docs/protocol.md section 3's GPT feature. Runs in eval mode (no dropout); returns float32.
    """
    gpt = unwrap(model)
    was_training = gpt.training
    gpt.eval()
    try:
        return gpt.hidden(idx).float().mean(dim=1)
    finally:
        gpt.train(was_training)


# ---- checkpoints --------------------------------------------------------------------------
def checkpoint_dict(model: nn.Module, **extra) -> dict:
    """What a GPT checkpoint holds: weights, model arguments, and JSON-able extras
    (iter_num, best_val_loss, tokenizer, ...)."""
    gpt = unwrap(model)
    return {"arch": ARCH, "model": gpt.state_dict(), "model_args": asdict(gpt.config), **extra}


def read_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A GPT checkpoint as a dict (weights_only=True); one clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # not a torch file, or it holds objects we refuse to unpickle
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable weights-only checkpoint ({first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("arch") != ARCH or "model_args" not in ckpt:
        what = (
            f"arch {ckpt.get('arch')!r}" if isinstance(ckpt, dict) and "arch" in ckpt
            else "no 'arch'/'model_args' entries, e.g. an image model's state_dict"
        )
        raise UserError(f"{path}: not a GPT checkpoint of this project ({what})")
    return ckpt


def load_checkpoint(path: str | Path, map_location="cpu") -> tuple[GPT, dict]:
    """(model in eval mode, the checkpoint dict) from a file written with checkpoint_dict."""
    ckpt = read_checkpoint(path, map_location)
    try:
        model = build_gpt(**ckpt["model_args"])
        model.load_state_dict(ckpt["model"])
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{path}: GPT checkpoint does not match its model arguments ({first})") from None
    return model.to(map_location).eval(), ckpt
