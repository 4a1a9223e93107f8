"""Helpers for the text tests: a tiny BPE, corpus files in datasets' formats, tiny configs."""

from __future__ import annotations

import json
from pathlib import Path

EOT = "<|endoftext|>"

# A handful of merges on top of the 256 bytes: enough that encoding really merges
# (multi-byte tokens) and ranks decide the order, like GPT-2's table but tiny.
_MERGES = [b"th", b"he", b"the", b" t", b" the", b"in", b"an", b"er", b"on", b"ing", b"  "]


def tiny_bpe():
    """A real tiktoken Encoding: 256 byte tokens, 11 merges, <|endoftext|> last."""
    import tiktoken

    from repr_sim.data.text import GPT2_PATTERN

    ranks = {bytes([i]): i for i in range(256)}
    for token in _MERGES:
        ranks[token] = len(ranks)
    return tiktoken.Encoding("tinybpe", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={EOT: len(ranks)})


def write_records(path: Path, records: list[dict]) -> Path:
    """Write records as .jsonl, .json (a JSON list) or .parquet, by the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(records), encoding="utf-8")
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        raise ValueError(path.suffix)
    return path


def tiny_text_config(folder: Path, name: str, *, split: str = "dataset", corpus: str = "tinystories",
                     corpora=None, iters: int = 6, block: int = 16, batch: int = 4,
                     eval_interval: int = 3, eval_iters: int = 2, patience: int = 8,
                     lr: float = 3e-3, n_layer: int = 1, n_embd: int = 32, grad_accum: int = 1,
                     num_chunks: int = 80, dropout: float = 0.0) -> Path:
    """A text experiment config file with a tiny model; returns its path."""
    if split == "dataset":
        data = f'corpus = "{corpus}"\nnum_chunks = {num_chunks}\n'
    else:
        data = "corpora = [" + ", ".join(f'"{c}"' for c in corpora) + "]\n"
    text = f"""kind = "text"
split = "{split}"
{data}fracs = [0.0, 0.5, 1.0]
seeds = [0, 1]

[model]
n_layer = {n_layer}
n_head = 2
n_embd = {n_embd}
dropout = {dropout}
bias = false
block_size = {block}

[recipe]
iters = {iters}
batch_size = {batch}
grad_accum = {grad_accum}
lr = {lr}
eval_interval = {eval_interval}
eval_iters = {eval_iters}
patience = {patience}
compile = false
log_interval = 1
"""
    path = Path(folder) / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def prepare_generated(corpus: str, path: Path, *, root: Path | None = None,
                      tokenizer: str = "bytes") -> dict:
    """`repr_sim.data.text.prepare` of a generated .txt corpus (one document a line).

    Where Hugging Face `datasets` is not installed (the GPU check's machine), the same
    function runs with a stand-in for its `datasets` step (`_prepare_hf`): the lines split
    train / val by a NumPy permutation instead of datasets' shuffle (other documents in val),
    tokenised and written by the module's own code, so the files are in the real format.
    """
    from unittest import mock

    from repr_sim.data import text as textdata

    try:
        import datasets  # noqa: F401
    except ImportError:
        with mock.patch.object(textdata, "_prepare_hf", _prepare_lines_without_datasets):
            return textdata.prepare(corpus, data_files=[path], tokenizer=tokenizer, root=root)
    return textdata.prepare(corpus, data_files=[path], tokenizer=tokenizer, root=root)


def _prepare_lines_without_datasets(spec, enc, data_files, num_proc, out: Path) -> dict:
    import math

    import numpy as np

    from repr_sim.data import text as textdata

    files, builder = textdata._check_files(data_files)
    assert builder == "text", "the stand-in reads .txt corpora only"
    lines = [line for f in files for line in Path(f).read_text(encoding="utf-8").splitlines()]
    order = np.random.default_rng(textdata.HF_SPLIT_SEED).permutation(len(lines))
    n_val = math.ceil(len(lines) * textdata.HF_TEST_SIZE)
    meta = {"source": {"files": files, "format": builder},
            "split": f"stand-in for datasets: NumPy permutation, {n_val} lines val"}
    for split, part in (("train", order[n_val:]), ("val", order[:n_val])):
        docs = [lines[i] for i in sorted(part)]
        ids = textdata._tokenize_batch({"text": docs}, corpus=spec.name, from_txt=True,
                                       enc=enc)["ids"][0]
        meta[f"{split}_tokens"] = textdata._write_stream([ids], out / f"{split}.bin", len(ids),
                                                         f"writing {split}.bin")
        meta[f"{split}_documents"] = len(docs)
    return meta
