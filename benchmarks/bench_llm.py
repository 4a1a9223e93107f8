"""Benchmark the LLM kind: LoRA training and feature extraction throughput, and a projection.

    python benchmarks/bench_llm.py [--steps 5] [--threads N]            tiny config, CPU
    python benchmarks/bench_llm.py --device cuda [--quick]              + a 1B-sized Llama

Rows (tokens per second, peak memory on CUDA):
- the tiny config (random 2-layer, width-32 Llama, vocabulary 512, LoRA r 32 on the seven
  projections): one optimiser step (forward, backward, clip, AdamW) of 8 windows of 128
  tokens, and feature extraction (the decoder only, no grad, mean-pooled final norm) of the
  same windows;
- with --device cuda: a random-initialised Llama of Llama-3.2-1B's shape built from its
  config (no download), float32 base as the study loads it, LoRA r 32, bf16 autocast: a
  training micro-batch of 8 x 512 tokens (the 1B run's per-device batch), and features in
  float32 (the study) and bf16 autocast (the option), 32 windows of 512 per batch; then the
  study's runs projected from these rates (compute scales with the parameter count:
  3B = 3.21B, 11B-Vision's text decoder ~9.8B, against 1.24B). --quick: fewer steps (< 60 s).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from repr_sim.models import llama  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PARAMS = {"1B": 1.24e9, "3B": 3.21e9, "11B": 9.8e9}  # text decoder parameters
TASK_TOKENS = 1000 * 32 * 512  # per model: 1,000 steps of 32 x 512
RUNS = {"task": 4 * 4, "ds": 6 * 4}  # pairs: fracs x seeds
PROBE_WINDOWS = {"task": 3 * 5000, "ds": 10_000}


def lora_model(config, device: str):
    import warnings

    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        base = LlamaForCausalLM(config)
    base.requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(base, LoraConfig(r=32, lora_alpha=64, lora_dropout=0.05,
                                               target_modules=TARGETS, task_type="CAUSAL_LM"))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_rate(model, batch: int, block: int, steps: int, device: str, bf16: bool) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, fused=device.startswith("cuda"))
    x = torch.randint(0, model.config.vocab_size, (batch, block), device=device)
    cast = (torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext())
    model.train()
    for i in range(steps + 1):  # the first is warm-up
        if i == 1:
            sync(device)
            start = time.perf_counter()
        with cast:
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    return steps * batch * block / (time.perf_counter() - start)


def feature_rate(model, batch: int, block: int, steps: int, device: str, bf16: bool) -> float:
    dec = llama.decoder(model)
    x = torch.randint(0, model.config.vocab_size, (batch, block), device=device)
    cast = (torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext())
    model.eval()
    with torch.no_grad(), cast:
        for i in range(steps + 1):
            if i == 1:
                sync(device)
                start = time.perf_counter()
            dec(input_ids=x).last_hidden_state.float().mean(dim=1)
    sync(device)
    return steps * batch * block / (time.perf_counter() - start)


def row(name: str, rate: float, mem: float | None = None) -> None:
    extra = f"{mem:10.2f}" if mem is not None else f"{'':>10}"
    print(f"| {name:<58} | {rate:>14,.0f} | {extra} |")


def peak_gib(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    return torch.cuda.max_memory_allocated() / 2**30


def projection(train_tps: float, feat_tps: float) -> None:
    print("\nProjected GPU hours on this device (one GPU; training + measurement, all pairs):")
    print("| model | task overlap (16 pairs) | dataset overlap (24 pairs, 1,000 steps) |")
    print("|---|---:|---:|")
    for name, n in PARAMS.items():
        scale = n / PARAMS["1B"]
        hours = {}
        for split in ("task", "ds"):
            train_s = 2 * TASK_TOKENS * scale / train_tps
            measure_s = 2 * PROBE_WINDOWS[split] * 512 * scale / feat_tps
            hours[split] = RUNS[split] * (train_s + measure_s) / 3600
        print(f"| {name} | {hours['task']:.1f} h | {hours['ds']:.1f} h |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer steps (under a minute on a GPU)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device here")
        return 2
    steps = 2 if args.quick else args.steps
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"| {'row':<58} | {'tokens/s':>14} | {'peak GiB':>10} |")
    print(f"|{'-' * 60}|{'-' * 16}:|{'-' * 11}:|")
    tiny = lora_model(llama.tiny_config(512), "cpu")
    row("tiny (2 x 32) LoRA training step, CPU, 8 x 128", train_rate(tiny, 8, 128, steps, "cpu", False))
    row("tiny (2 x 32) features, CPU, 8 x 128", feature_rate(tiny, 8, 128, steps, "cpu", False))
    if args.device != "cuda":
        return 0
    del tiny
    t0 = time.perf_counter()
    model = lora_model(llama.llama_1b_config(), "cuda")
    print(f"(1B-shaped Llama built on the GPU in {time.perf_counter() - t0:.1f} s, "
          f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters)")
    torch.cuda.reset_peak_memory_stats()
    train_tps = train_rate(model, 8, 512, steps, "cuda", True)
    row("1B LoRA training micro-batch 8 x 512, fp32 base, bf16 autocast", train_tps, peak_gib("cuda"))
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    feat32 = feature_rate(model, 32, 512, steps, "cuda", False)
    row("1B features, fp32 (the study), 32 x 512", feat32, peak_gib("cuda"))
    torch.cuda.reset_peak_memory_stats()
    feat16 = feature_rate(model, 32, 512, steps, "cuda", True)
    row("1B features, bf16 autocast, fp32 pooling, 32 x 512", feat16, peak_gib("cuda"))
    projection(train_tps, feat32)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
