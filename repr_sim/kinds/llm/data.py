"""Data of the LLM experiments, in one process (llm_finetune/run_write_data.sh calls this).

    python -m repr_sim.kinds.llm.data [--model REF] [--corpora ...]   the study's v2 corpora
    python -m repr_sim.kinds.llm.data --tiny                          a stand-in that runs anywhere

Study: `reprsim prepare-text <corpus> --preset v2 --tokenizer hf:<model>` for each corpus
(the hub datasets must be reachable or in the datasets cache; the tokenizer in the HF cache or
a folder). Tiny: the six generated text domains of repr_sim.data.textgen written to
`$REPRSIM_DATA/llm/raw/<corpus>.txt`, a byte-level BPE trained on them and a random 2-layer,
width-32 Llama saved to `$REPRSIM_DATA/llm/tiny_llama/` (repr_sim.models.llama.write_tiny), and
the six corpora prepared with that tokenizer (v2 preset, local files: the last 10% of the lines
are val). Everything is skipped when already there (--force redoes it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...data import hftext, textgen
from ...errors import UserError
from ...paths import data_root
from . import LLM_CORPORA

TINY_MODEL = "llm/tiny_llama"
TINY_CHARS = 150_000


def write_tiny(chars: int = TINY_CHARS, force: bool = False, vocab: int = 512) -> Path:
    from ...models import llama

    root = data_root() / "llm"
    raw = textgen.write_corpora(root / "raw", chars, seed=0)
    model_dir = data_root() / TINY_MODEL
    if force or not (model_dir / "config.json").is_file():
        texts = [line for p in raw.values() for line in p.read_text(encoding="utf-8").splitlines()]
        llama.write_tiny(model_dir, texts, vocab=vocab)
        print(f"tiny Llama (2 layers, width 32) and its BPE tokenizer in {model_dir}")
    for corpus, path in raw.items():
        hftext.prepare(corpus, f"hf:{TINY_MODEL}", preset="v2", data_files=[path], force=force)
    return model_dir


def write_study(model: str, corpora, force: bool = False) -> None:
    for corpus in corpora:
        hftext.prepare(corpus, f"hf:{model}", preset="v2", force=force)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repr_sim.kinds.llm.data",
                                     description="prepare the LLM experiments' corpora")
    parser.add_argument("--tiny", action="store_true",
                        help="generated text, a local BPE and a tiny random Llama (offline)")
    parser.add_argument("--model", default="meta-llama/Llama-3.2-1B-Instruct",
                        help="whose tokenizer (hub name in the HF cache, or a folder)")
    parser.add_argument("--corpora", nargs="+", default=LLM_CORPORA, choices=LLM_CORPORA)
    parser.add_argument("--chars", type=int, default=TINY_CHARS, help="--tiny: characters per domain")
    parser.add_argument("--force", action="store_true", help="write everything again")
    args = parser.parse_args(argv)
    try:
        if args.tiny:
            write_tiny(args.chars, args.force)
        else:
            write_study(args.model, args.corpora, args.force)
    except UserError as e:
        print(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
