"""Benchmark the text stack: GPT training-step throughput and prepare-text tokenisation.

    python benchmarks/bench_gpt.py [--batch 4] [--steps 3] [--chars 2000000]

Rows (tokens per second):
- CPU training step (forward, backward, AdamW, grad clip) of the dataset-overlap model
  (6 layers, 384 wide, 6 heads, block 256) at a small batch, with the GPT-2 vocabulary
  (50,304 rows padded) and with the byte vocabulary (320 rows padded);
- the same step on CUDA in bf16 autocast, at the study's micro-batch (128), eager and
  torch.compile'd, plus the 12-layer 768-wide task model (skipped without a GPU);
- prepare-text end to end (reading a .txt corpus with `datasets`, the 95/5 split,
  tokenising, writing train.bin/val.bin) with the byte tokenizer and with a small BPE
  (the 256 bytes plus the prefixes of the corpus's 400 most frequent words, a real
  tiktoken Encoding), and tiktoken's raw encode throughput of each for comparison.
  The GPT-2 tokenizer is measured too when its files are in tiktoken's cache.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from repr_sim.data import text as textdata  # noqa: E402
from repr_sim.data import textgen  # noqa: E402
from repr_sim.models import gpt  # noqa: E402

DS_MODEL = dict(n_layer=6, n_head=6, n_embd=384, dropout=0.2, bias=False, block_size=256)
TASK_MODEL = dict(n_layer=12, n_head=12, n_embd=768, dropout=0.0, bias=False, block_size=256)


def step_throughput(model_args: dict, vocab: int, batch: int, steps: int, device: str,
                    compile_model: bool = False) -> tuple[float, float]:
    """(tokens per second, peak GPU memory in GiB or 0) of full training steps."""
    torch.manual_seed(0)
    model = gpt.build_gpt(**model_args, vocab_size=gpt.padded_vocab(vocab)).to(device)
    opt = model.optimizer(lr=5e-4, weight_decay=0.1, betas=(0.9, 0.95), device_type=device)
    run = torch.compile(model) if compile_model else model
    block = model_args["block_size"]
    x = torch.randint(0, vocab, (batch, block + 1), device=device)
    cuda = device == "cuda"

    def step():
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
        with ctx:
            _, loss = run(x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2 if compile_model else 1):  # warm-up (and compilation)
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    return batch * block * steps / seconds, peak


def word_bpe(text: str, n_words: int = 400):
    """A small real BPE: bytes + every prefix (>= 2 bytes) of the most frequent words."""
    import tiktoken

    ranks = {bytes([i]): i for i in range(256)}
    words = [w for w, _ in Counter(re.findall(r" ?[A-Za-z]+", text)).most_common(n_words)]
    for piece in sorted({w.encode()[:k] for w in words for k in range(2, len(w.encode()) + 1)},
                        key=lambda b: (len(b), b)):
        ranks.setdefault(piece, len(ranks))
    return tiktoken.Encoding("wordbpe", pat_str=textdata.GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={textdata.EOT: len(ranks)})


def prepare_throughput(path: Path, enc, root: Path) -> tuple[float, float, int]:
    """(prepare tokens/s, raw encode tokens/s, tokens) on one .txt corpus."""
    start = time.perf_counter()
    meta = textdata.prepare("tinystories", data_files=[path], tokenizer=enc, root=root, force=True)
    seconds = time.perf_counter() - start
    tokens = meta["train_tokens"] + meta["val_tokens"]
    lines = path.read_text(encoding="utf-8").splitlines()
    start = time.perf_counter()
    raw = sum(len(enc.encode_ordinary(line)) for line in lines)
    return tokens / seconds, raw / (time.perf_counter() - start), tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="CPU batch (sequences of 256)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row")
    parser.add_argument("--cuda-batch", type=int, default=128)
    parser.add_argument("--chars", type=int, default=2_000_000, help="characters of the prepare corpus")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads", file=sys.stderr)
    for vocab, label in ((50257, "gpt2 vocab"), (257, "bytes vocab")):
        tps, _ = step_throughput(DS_MODEL, vocab, args.batch, args.steps, "cpu")
        rows.append((f"train step, CPU fp32, 6L/384, block 256, batch {args.batch}, {label}", f"{tps:,.0f} tok/s", ""))

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for model_args, label in ((DS_MODEL, "6L/384"), (TASK_MODEL, "12L/768")):
            for compiled in (False, True):
                tps, peak = step_throughput(model_args, 50257, args.cuda_batch, max(args.steps, 10),
                                            "cuda", compile_model=compiled)
                rows.append((f"train step, {name} bf16, {label}, batch {args.cuda_batch}, gpt2 vocab"
                             f"{', compiled' if compiled else ''}", f"{tps:,.0f} tok/s", f"peak {peak:.1f} GiB"))
    else:
        rows.append(("train step, CUDA bf16", "skipped", "no CUDA device on this machine"))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = textgen.write_corpora(tmp / "gen", args.chars, seed=0, domains=["tinystories"])["tinystories"]
        text = path.read_text(encoding="utf-8")
        encoders = [("bytes", textdata.get_tokenizer("bytes")), ("small BPE", word_bpe(text))]
        try:
            encoders.append(("gpt2", textdata.gpt2_encoding()))
        except Exception as e:  # no cached GPT-2 files offline
            rows.append(("prepare-text, gpt2", "skipped", str(e).split(":")[0]))
        for label, enc in encoders:
            tps, raw, tokens = prepare_throughput(path, enc, tmp / "data")
            rows.append((f"prepare-text, {label} ({enc.n_vocab} tokens), {len(text) / 1e6:.1f} MB .txt",
                         f"{tps:,.0f} tok/s", f"{tokens:,} tokens; raw encode {raw:,.0f} tok/s"))

    width = max(len(r[0]) for r in rows)
    print(f"| {'what'.ljust(width)} | throughput | notes |")
    print(f"|{'-' * (width + 2)}|------------|-------|")
    for what, value, note in rows:
        print(f"| {what.ljust(width)} | {value} | {note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
