"""Text corpora for the nanoGPT experiments: tokenizers, prepare, token streams, samplers.

Prepared corpora live in `$REPRSIM_DATA/text/<corpus>/`:

    train.bin, val.bin   the token stream, uint16, documents back to back
    meta.json            corpus, source, tokenizer, vocabulary size, EOT id, token counts

How each corpus is read and split (docs/protocol.md section 2):
- shakespeare_all: one text file (input.txt); the first 90% of its characters are train,
  the last 10% val; no end-of-text token.
- the Hugging Face corpora: the hub dataset's train split (or local files),
  `train_test_split(test_size=0.05, seed=2357)`, the end-of-text token appended to every
  document. Local files: `.txt` = one document per line (the document text, whatever the
  corpus); `.json`/`.jsonl`/`.parquet` carry the corpus's own fields.
  Every document is kept, empty ones too (they become a lone end-of-text token, as in
  the study's preparation, which filtered nothing).

Tokenizers are tiktoken `Encoding`s: "gpt2" (tiktoken's GPT-2 BPE, needs its two files
in tiktoken's cache when offline) and "bytes" (256 single-byte tokens plus the
end-of-text token, built here, needs nothing).

Samplers draw windows of `length` consecutive tokens (training: block_size + 1, inputs
plus shifted targets) from allowed token ranges of a stream, never across a range
boundary (`TokenWindows`), or from several streams, picking one uniformly per window
(`MixedWindows`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_path, atomic_write_json, read_json
from ..errors import UserError
from ..paths import data_root, usable_cpus

EOT = "<|endoftext|>"
TOKENIZERS = ("gpt2", "bytes")
META = "meta.json"
SPLITS = ("train", "val")
DTYPE = np.uint16
HF_TEST_SIZE = 0.05
HF_SPLIT_SEED = 2357
SHAKESPEARE_TRAIN_FRAC = 0.9

# GPT-2's pre-tokenisation pattern (as tiktoken writes it): it matches every character, so
# no text is dropped, and keeps pieces short, which keeps byte-pair merging fast.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
GPT2_FILES_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
GPT2_FILES = ("vocab.bpe", "encoder.json")


# ---- corpora -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Corpus:
    name: str
    hub: str | None  # Hugging Face dataset name (None: local text only)
    config: str | None = None  # the hub dataset's configuration
    fields: tuple[str, ...] = ("text",)  # record fields a document is built from
    eot: bool = True  # append the end-of-text token to every document

    def documents(self, columns: dict) -> list[str]:
        """The document texts of a batch of records (field -> list of values)."""
        if self.name == "tinycodes":
            return [p.strip() + "\n" + r.strip()
                    for p, r in zip(columns["prompt"], columns["response"], strict=True)]
        return list(columns[self.fields[0]])


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus("shakespeare_all", hub=None, eot=False),
        Corpus("tinystories", hub="roneneldan/TinyStories"),
        Corpus("wikitext", hub="Salesforce/wikitext", config="wikitext-103-v1"),
        Corpus("tinycodes", hub="nampdn-ai/tiny-codes", fields=("prompt", "response")),
        Corpus("tinytextbooks", hub="nampdn-ai/tiny-textbooks"),
        Corpus("tinywebtext", hub="nampdn-ai/tiny-webtext", fields=("human",)),
    )
}


def get_corpus(name: str) -> Corpus:
    if name not in CORPORA:
        raise UserError(f"unknown corpus '{name}' (known: {', '.join(CORPORA)})")
    return CORPORA[name]


def corpus_dir(corpus: str, root: str | Path | None = None) -> Path:
    return Path(root or data_root()) / "text" / corpus


# ---- tokenizers --------------------------------------------------------------------------
def bytes_encoding():
    """256 single-byte tokens (id = byte value) and <|endoftext|> = 256, as a tiktoken Encoding."""
    import tiktoken

    return tiktoken.Encoding(
        "bytes",
        pat_str=GPT2_PATTERN,
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={EOT: 256},
    )


def gpt2_cache_help() -> str:
    """Where tiktoken looks for the GPT-2 files, in words."""
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    where = cache or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    names = ", ".join(
        f"{f} as {hashlib.sha1((GPT2_FILES_URL + f).encode()).hexdigest()}" for f in GPT2_FILES
    )
    return (
        f"download {GPT2_FILES_URL}{{{','.join(GPT2_FILES)}}} on a machine with network and "
        f"copy them into tiktoken's cache directory {where} (set TIKTOKEN_CACHE_DIR to choose "
        f"it) under their cache names ({names}), or use --tokenizer bytes"
    )


def gpt2_encoding():
    import tiktoken

    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # network errors, missing cache files, hash mismatches
        reason = type(e).__name__
        raise UserError(f"cannot load tiktoken's 'gpt2' encoding ({reason}): {gpt2_cache_help()}") from None


@functools.cache
def _named_tokenizer(name: str):
    if name == "gpt2":
        return gpt2_encoding()
    if name == "bytes":
        return bytes_encoding()
    raise UserError(f"unknown tokenizer '{name}' (known: {', '.join(TOKENIZERS)})")


def get_tokenizer(tokenizer):
    """A tiktoken Encoding from a name in TOKENIZERS, or the Encoding itself."""
    if isinstance(tokenizer, str):
        return _named_tokenizer(tokenizer)
    if not hasattr(tokenizer, "encode_ordinary"):
        raise UserError(f"not a tokenizer: {tokenizer!r}")
    return tokenizer


def eot_id(enc) -> int:
    """The end-of-text token of an encoding (it must have one)."""
    try:
        return enc.encode_single_token(EOT)
    except KeyError:
        raise UserError(f"tokenizer '{enc.name}' has no {EOT} token") from None


# ---- prepare -----------------------------------------------------------------------------
_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _check_files(data_files: Sequence[str | Path]) -> tuple[list[str], str]:
    """Absolute paths of existing files of one known format, and that format's builder."""
    paths = [Path(f).expanduser() for f in data_files]
    for p in paths:
        if not p.is_file():
            raise UserError(f"data file not found: {p}")
    kinds = {p.suffix.lower() for p in paths}
    unknown = sorted(k for k in kinds if k not in _BUILDERS)
    if unknown:
        raise UserError(
            f"unsupported data file type {unknown[0] or '(none)'} (use {', '.join(_BUILDERS)})"
        )
    builders = {_BUILDERS[k] for k in kinds}
    if len(builders) > 1:
        raise UserError("--data-files mixes formats; give files of one kind (.txt, JSON or parquet)")
    return [str(p.resolve()) for p in paths], builders.pop()


def _tokenize_batch(batch: dict, *, corpus: str, from_txt: bool, enc) -> dict:
    """datasets.map function: a batch of records -> ONE row holding their token stream.

    The documents' ids (each followed by EOT where the corpus wants it) are concatenated
    in order into one uint16 array: the stream is the rows' arrays back to back, and
    arrow stores one array per batch instead of a Python list per document (much faster).
    """
    spec = CORPORA[corpus]
    docs = list(batch["text"]) if from_txt else spec.documents(batch)
    eot = [eot_id(enc)] if spec.eot else []
    flat: list[int] = []
    for doc in docs:
        flat.extend(enc.encode_ordinary(doc))
        flat.extend(eot)
    return {"ids": [np.asarray(flat, dtype=DTYPE)], "len": [len(flat)], "docs": [len(docs)]}


def _write_stream(chunks, path: Path, total: int, desc: str) -> int:
    """Write uint16 token chunks to `path` atomically; returns the token count."""
    from ..paths import progress

    written = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f, progress(
        total=total, desc=desc, unit="tok", unit_scale=True
    ) as bar:
        for chunk in chunks:
            arr = np.asarray(chunk, dtype=DTYPE)
            f.write(arr.tobytes())
            written += arr.size
            bar.update(arr.size)
        f.flush()
        os.fsync(f.fileno())
    return written


def _load_hf(spec: Corpus, data_files, num_proc: int, cache_dir: Path):
    """The raw train records (a datasets.Dataset) and a description of their source."""
    import datasets

    if data_files:
        files, builder = _check_files(data_files)
        try:
            ds = datasets.load_dataset(
                builder, data_files=files, split="train", cache_dir=str(cache_dir)
            )
        except Exception as e:
            raise UserError(f"cannot read {files[0]}{' ...' if len(files) > 1 else ''} as {builder}: {e}") from None
        if builder != "text":
            missing = [f for f in spec.fields if f not in ds.column_names]
            if missing:
                raise UserError(
                    f"{files[0]}: {spec.name} records need the field(s) {', '.join(spec.fields)}; "
                    f"missing {', '.join(missing)} (found: {', '.join(ds.column_names)})"
                )
        return ds, builder == "text", {"files": files, "format": builder}
    try:
        ds = datasets.load_dataset(spec.hub, spec.config, split="train", num_proc=num_proc)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(
            f"cannot load {spec.hub} from the Hugging Face hub ({first}); offline, give the "
            f"corpus as local files with --data-files"
        ) from None
    return ds, False, {"hub": spec.hub, "config": spec.config}


def _prepare_hf(spec: Corpus, enc, data_files, num_proc: int | None, out: Path) -> dict:
    work = Path(tempfile.mkdtemp(prefix=".prepare-", dir=out))
    try:
        ds, from_txt, source = _load_hf(spec, data_files, num_proc or usable_cpus(), work)
        if len(ds) < 2:
            raise UserError(f"{spec.name}: {len(ds)} document(s); need at least 2 to split train/val")
        parts = ds.train_test_split(test_size=HF_TEST_SIZE, seed=HF_SPLIT_SEED, shuffle=True)
        # A process for fewer than ~1000 documents costs more start-up time than it saves.
        procs = max(1, min(num_proc or usable_cpus(), len(ds) // 1000))
        meta = {"source": source, "split": f"train_test_split(test_size={HF_TEST_SIZE}, seed={HF_SPLIT_SEED})"}
        for split, part in (("train", parts["train"]), ("val", parts["test"])):
            tok = part.map(
                _tokenize_batch,
                fn_kwargs={"corpus": spec.name, "from_txt": from_txt, "enc": enc},
                batched=True,
                remove_columns=part.column_names,
                num_proc=procs if procs > 1 else None,
                cache_file_name=str(work / f"{split}_ids.arrow"),
                desc=f"tokenizing {spec.name} {split}",
            )
            if tok._indices is not None:  # map writes a fresh table; be safe if it ever does not
                tok = tok.flatten_indices()
            table = tok.data  # the arrow table, read chunk by chunk (no per-row Python)
            total = int(sum(int(np.sum(c.to_numpy(), dtype=np.int64)) for c in table.column("len").chunks))
            chunks = (c.flatten().to_numpy(zero_copy_only=False) for c in table.column("ids").chunks)
            meta[f"{split}_tokens"] = _write_stream(chunks, out / f"{split}.bin", total, f"writing {split}.bin")
            meta[f"{split}_documents"] = int(sum(int(np.sum(c.to_numpy(), dtype=np.int64))
                                                 for c in table.column("docs").chunks))
        return meta
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _shakespeare_input(data_files, out: Path) -> list[Path]:
    if data_files:
        paths = [Path(f).expanduser() for f in data_files]
        for p in paths:
            if not p.is_file():
                raise UserError(f"data file not found: {p}")
        return paths
    default = out / "input.txt"
    if not default.is_file():
        raise UserError(
            f"shakespeare_all needs its input.txt: pass --data-files path/to/input.txt or put it at {default}"
        )
    return [default]


def _prepare_shakespeare(enc, data_files, out: Path) -> dict:
    paths = _shakespeare_input(data_files, out)
    try:
        text = "".join(p.read_text(encoding="utf-8") for p in paths)
    except UnicodeDecodeError as e:
        raise UserError(f"shakespeare_all input is not UTF-8 text ({e})") from None
    cut = int(len(text) * SHAKESPEARE_TRAIN_FRAC)
    meta = {
        "source": {"files": [str(p.resolve()) for p in paths], "format": "text"},
        "split": f"first {SHAKESPEARE_TRAIN_FRAC:.0%} of the characters train, the rest val",
        "train_characters": cut,
        "val_characters": len(text) - cut,
    }
    for split, part in (("train", text[:cut]), ("val", text[cut:])):
        ids = enc.encode_ordinary(part)
        meta[f"{split}_tokens"] = _write_stream([ids], out / f"{split}.bin", len(ids), f"writing {split}.bin")
    return meta


def prepare(
    corpus: str,
    *,
    data_files: Sequence[str | Path] | None = None,
    tokenizer="gpt2",
    num_proc: int | None = None,
    root: str | Path | None = None,
    force: bool = False,
) -> dict:
    """Tokenise a corpus into <root>/text/<corpus>/{train,val}.bin; returns its meta.json.

    `tokenizer`: a name in TOKENIZERS or a tiktoken Encoding. An already prepared corpus
    with the same tokenizer and source is left alone unless `force`.
    """
    spec = get_corpus(corpus)
    enc = get_tokenizer(tokenizer)
    if enc.max_token_value >= np.iinfo(DTYPE).max:
        raise UserError(f"tokenizer '{enc.name}' has {enc.n_vocab} tokens; uint16 streams hold < 65535")
    out = corpus_dir(corpus, root)
    out.mkdir(parents=True, exist_ok=True)
    wanted_files = sorted(str(Path(f).expanduser().resolve()) for f in data_files or [])
    if not force and is_prepared(corpus, root):
        old = read_meta(corpus, root)
        old_files = sorted(old.get("source", {}).get("files", []))
        if old.get("tokenizer") == enc.name and (not data_files or old_files == wanted_files):
            print(f"prepare-text: {corpus} already prepared in {out} (use --force to redo)")
            return old
    (out / META).unlink(missing_ok=True)  # written last: a half-prepared corpus has none

    start = time.time()
    if spec.hub is None:
        meta = _prepare_shakespeare(enc, data_files, out)
    else:
        meta = _prepare_hf(spec, enc, data_files, num_proc, out)
    meta.update(
        corpus=corpus,
        tokenizer=enc.name,
        vocab_size=enc.n_vocab,
        eot_token=eot_id(enc) if EOT in enc.special_tokens_set else None,
        eot_appended=spec.eot,
        dtype=np.dtype(DTYPE).name,
        version=__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        seconds=round(time.time() - start, 3),
    )
    atomic_write_json(out / META, meta)
    print(
        f"prepare-text: {corpus}: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val "
        f"tokens ({enc.name}) in {out}"
    )
    return meta


def is_prepared(corpus: str, root: str | Path | None = None) -> bool:
    folder = corpus_dir(corpus, root)
    return all((folder / f).is_file() for f in (META, "train.bin", "val.bin"))


def read_meta(corpus: str, root: str | Path | None = None) -> dict:
    get_corpus(corpus)
    path = corpus_dir(corpus, root) / META
    if not path.is_file():
        raise UserError(f"corpus '{corpus}' is not prepared ({path} missing): run `reprsim prepare-text {corpus}`")
    return read_json(path)


def load_stream(corpus: str, split: str, root: str | Path | None = None) -> np.ndarray:
    """The uint16 token stream of a prepared corpus (memory-mapped, read-only)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got '{split}'")
    meta = read_meta(corpus, root)
    path = corpus_dir(corpus, root) / f"{split}.bin"
    if not path.is_file():
        raise UserError(f"{path} missing: run `reprsim prepare-text {corpus}`")
    size = path.stat().st_size
    expected = meta.get(f"{split}_tokens")
    dtype = np.dtype(meta.get("dtype", DTYPE))  # uint16 here; uint32 for large vocabularies
    if size % dtype.itemsize or (expected is not None and size // dtype.itemsize != expected):
        raise UserError(f"{path}: {size} bytes, expected {expected} {dtype.name} tokens; prepare it again")
    if size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def cli_prepare_text(args) -> int:
    if getattr(args, "dtype", None) not in (None, "uint16"):
        raise UserError(f"--dtype {args.dtype}: the {args.tokenizer} tokenizer writes uint16 streams")
    prepare(
        args.corpus,
        data_files=args.data_files,
        tokenizer=args.tokenizer,
        num_proc=args.num_proc,
        root=args.data_root,
        force=getattr(args, "force", False),
    )
    return 0


# ---- samplers ----------------------------------------------------------------------------
class TokenWindows:
    """Uniform random windows of `length` consecutive tokens inside given token ranges.

    Every window lies inside one range [start, end) (never across a boundary); every
    valid window position in the ranges is equally likely.
    """

    def __init__(self, stream: np.ndarray, ranges: Sequence[tuple[int, int]] | None, length: int):
        self.stream = stream
        self.length = int(length)
        if self.length < 1:
            raise ValueError(f"window length must be >= 1, got {length}")
        ranges = [(0, len(stream))] if ranges is None else [(int(s), int(e)) for s, e in ranges]
        if not ranges:
            raise UserError("no token ranges to sample windows from")
        for s, e in ranges:
            if not 0 <= s < e <= len(stream):
                raise UserError(f"token range ({s}, {e}) outside the stream of {len(stream)} tokens")
            if e - s < self.length:
                raise UserError(
                    f"a range of {e - s} tokens cannot hold a window of {self.length} tokens "
                    f"(block size too long for the chunk or stream)"
                )
        self.ranges = np.asarray(ranges, dtype=np.int64)
        self.counts = self.ranges[:, 1] - self.ranges[:, 0] - self.length + 1  # valid starts
        self.cum = np.cumsum(self.counts)

    def starts(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.integers(0, self.cum[-1], size=n)
        which = np.searchsorted(self.cum, u, side="right")
        before = self.cum[which] - self.counts[which]
        return self.ranges[which, 0] + (u - before)

    def windows(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """[n, length] int64 token windows."""
        return gather(self.stream, self.starts(rng, n), self.length)


class MixedWindows:
    """Each window picks one of several samplers uniformly, then a window in it."""

    def __init__(self, samplers: Sequence[TokenWindows]):
        if not samplers:
            raise UserError("no corpora to sample windows from")
        lengths = {s.length for s in samplers}
        if len(lengths) != 1:
            raise ValueError(f"samplers have different window lengths: {sorted(lengths)}")
        self.samplers = list(samplers)
        self.length = lengths.pop()

    def sources(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(0, len(self.samplers), size=n)

    def windows(self, rng: np.random.Generator, n: int) -> np.ndarray:
        which = self.sources(rng, n)
        out = np.empty((n, self.length), dtype=np.int64)
        for i, sampler in enumerate(self.samplers):
            rows = np.flatnonzero(which == i)
            if rows.size:
                out[rows] = sampler.windows(rng, rows.size)
        return out


def gather(stream: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """stream[s : s + length] for every start, as an int64 [len(starts), length] array."""
    return np.asarray(stream[starts[:, None] + np.arange(length)], dtype=np.int64)


def stream_windows(
    corpus: str, split: str, length: int, *, ranges=None, root: str | Path | None = None
) -> TokenWindows:
    """Windows over a prepared corpus's stream (optionally only inside `ranges`)."""
    return TokenWindows(load_stream(corpus, split, root), ranges, length)


def mixed_windows(corpora: Sequence[str], split: str, length: int, *, root=None) -> MixedWindows:
    """Windows drawn from the streams of several corpora, one corpus chosen uniformly each."""
    return MixedWindows([stream_windows(c, split, length, root=root) for c in corpora])
