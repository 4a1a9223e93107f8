"""Llama-style base models for the LLM kind: found offline, recorded, loaded, or built tiny.

- `resolve(ref)`: a base model named by a folder (absolute, or relative to $REPRSIM_DATA) or
  by a hub name that must already be in the Hugging Face cache (HF_HUB_OFFLINE is honoured;
  with it unset a download is tried, which works on a login node with the user's token);
  a missing model is one line that says gated models need the user's token.
- `record(found)`: what args.json keeps of it: the cache revision (commit) and file hashes
  (the cache's blob names are the sha256 of the large files; a local folder's files are
  hashed here).
- `load(found, dtype, device)`: AutoModelForCausalLM (the text decoder of a vision model).
- `write_tiny(folder, texts)`: a small byte-level BPE trained on `texts` with the
  `tokenizers` package and a random-initialised 2-layer, width-32 LlamaConfig model, both
  saved with save_pretrained: a stand-in for a hub model (tests, the tiny experiment).
- `llama_1b_config()`: the shape of Llama-3.2-1B, for benchmarks without a download.

    python -m repr_sim.models.llama tiny OUT_DIR --text-dir DIR [--vocab 512]
"""

from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..paths import data_root

GATED_HELP = ("gated models (meta-llama/*) need your own Hugging Face token: on a login node with "
              "network run `hf auth login` and `hf download {ref}`, or give a local folder")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt")
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"


@dataclass(frozen=True)
class Found:
    ref: str  # as the config names it
    path: Path  # the folder from_pretrained reads
    revision: str | None  # the hub commit of a cached snapshot


def resolve(ref: str) -> Found:
    """The folder of base model `ref` (a folder, or a hub name in the HF cache)."""
    for candidate in (Path(ref).expanduser(), data_root() / ref):
        if candidate.is_dir():
            if not (candidate / "config.json").is_file():
                raise UserError(f"base model folder {candidate} has no config.json")
            return Found(ref, candidate.resolve(), None)
    if ref.startswith(("/", ".", "~")) or ref.count("/") != 1:
        raise UserError(f"base model {ref!r}: no such folder (nor under {data_root()}); "
                        + GATED_HELP.format(ref=ref))
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    try:
        path = Path(snapshot_download(ref, local_files_only=True))
    except Exception:
        if offline:
            raise UserError(f"base model {ref!r} is not in the Hugging Face cache and HF_HUB_OFFLINE "
                            f"is set; " + GATED_HELP.format(ref=ref)) from None
        try:
            path = Path(snapshot_download(ref))
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise UserError(f"base model {ref!r}: not cached and cannot download ({first}); "
                            + GATED_HELP.format(ref=ref)) from None
    return Found(ref, path, path.name)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def record(found: Found) -> dict:
    """{"ref", "path", "revision", "files": {name: sha256}} for args.json."""
    files = {}
    for p in sorted(found.path.iterdir()):
        if not p.is_file() or not p.name.endswith(WEIGHT_SUFFIXES):
            continue
        target = p.resolve()
        blob = target.name  # a cache blob: its name is the file's sha256 (LFS) or git sha1
        files[p.name] = blob if found.revision and len(blob) == 64 else _sha256(target)
    return {"ref": found.ref, "path": str(found.path), "revision": found.revision, "files": files}


def load(found: Found, *, dtype=None, device: str = "cpu"):
    """The base model, eval mode, every weight frozen."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(found.path), dtype=dtype or torch.float32)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"cannot load base model {found.ref} from {found.path} ({first})") from None
    model.requires_grad_(False)
    return model.to(device).eval()


def decoder(model):
    """The decoder stack (LlamaModel) under a causal-LM head, through any PEFT wrapping."""
    inner = model
    while not hasattr(inner, "layers") or not hasattr(inner, "norm"):
        for attr in ("base_model", "model"):
            nxt = getattr(inner, attr, None)
            if nxt is not None and nxt is not inner:
                inner = nxt
                break
        else:
            raise UserError(f"{type(model).__name__}: no decoder with layers and a final norm")
    return inner


# ---- tiny stand-ins and reference shapes ----------------------------------------------------
def train_tokenizer(texts, vocab: int = 512):
    """A byte-level BPE (tokenizers) as a transformers fast tokenizer with BOS/EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS)


def tiny_config(vocab: int, *, width: int = 32, layers: int = 2, max_len: int = 1024):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=width, intermediate_size=2 * width,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=max_len, bos_token_id=0, eos_token_id=1,
                       tie_word_embeddings=False)


def llama_1b_config():
    """Llama-3.2-1B's shape (config.json of the hub model), built without a download."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                       num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                       max_position_embeddings=131072, rope_theta=500000.0,
                       tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001)


def write_tiny(folder, texts, *, vocab: int = 512, width: int = 32, layers: int = 2,
               seed: int = 0) -> Path:
    """Train a tokenizer on `texts`, build a random Llama, save both into `folder`."""
    import torch
    from transformers import LlamaForCausalLM

    folder = Path(folder)
    tok = train_tokenizer(texts, vocab)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(len(tok), width=width, layers=layers))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repr_sim.models.llama",
                                     description="save a tiny random Llama + local BPE tokenizer")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tiny", help="write a tiny model folder (stand-in for a hub model)")
    p.add_argument("out", help="the model folder to write")
    p.add_argument("--text-dir", required=True, help="folder of .txt files to train the BPE on")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    args = parser.parse_args(argv)
    files = sorted(Path(args.text_dir).glob("*.txt"))
    if not files:
        print(f"error: no .txt files in {args.text_dir}")
        return 2
    texts = [line for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    out = write_tiny(args.out, texts, vocab=args.vocab, width=args.width, layers=args.layers)
    print(f"tiny Llama ({args.layers} layers, width {args.width}, vocabulary ~{args.vocab}) in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
