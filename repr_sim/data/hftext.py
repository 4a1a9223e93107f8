"""Text corpora tokenised with a Hugging Face tokenizer (the LLM experiments, docs/protocol.md section 6.5).

    reprsim prepare-text CORPUS --tokenizer hf:<model or tokenizer folder> [--preset v1|v2]
                         [--dtype uint16|uint32] [--data-files ...]

Layout: `$REPRSIM_DATA/text/<corpus>/<preset>_<family>/{train,val}.bin, meta.json`, where
the family is `hf_<first 12 hex digits of the tokenizer hash>`: the hash covers the
vocabulary (token -> id) and the EOS token, so every model that shares a tokenizer (Llama-3.2
1B and 3B) reuses one folder, and the byte/gpt2 data of `text/<corpus>/` stay beside it.

Streams: the documents' ids back to back, the EOS id after every document, no other special
token (no BOS). uint16 when the vocabulary fits (<= 65,535 ids), else uint32; `--dtype`
overrides, and a vocabulary that does not fit the chosen dtype is refused. meta.json says
the dtype, so readers (repr_sim.data.text.load_stream, `stream`) take it from there.

Presets (where the text comes from and what becomes val):
- v2 (the study's LLM corpora): tiny-webtext (`human`, val "validation"), tiny-codes
  (prompt + the tokenizer's EOS *string* + response, "validation"), Trelis/tiny-shakespeare
  (`Text`, "test"), TinyStories (`text`, "validation"), wikitext-103-raw-v1 (`text`,
  "validation"), tiny-textbooks (`text`, "test"): the datasets' own val splits. Local files
  (`--data-files`, offline) have no val split: the last 10% of their rows (at least 1)
  become val, the study's fallback for a dataset without one.
- v1: the corpora and split of repr_sim.data.text (train_test_split 5%, seed 2357;
  shakespeare_all 90/10 by characters, no EOS), tokenised with the HF tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_path, atomic_write_json, read_json
from ..errors import UserError
from ..paths import data_root

PREFIX = "hf:"
PRESETS = ("v1", "v2")
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
META = "meta.json"
V2_VAL_FRAC = 0.1
ENCODE_BATCH = 1000  # documents per tokenizer call
GATED_HELP = ("gated models (meta-llama/*) need your own Hugging Face token: on a login node "
              "with network run `hf auth login` and `hf download <model>` (or pass a local folder)")


@dataclass(frozen=True)
class V2Corpus:
    hub: str
    config: str | None
    field: str
    val_split: str


V2_CORPORA = {
    "tinywebtext": V2Corpus("nampdn-ai/tiny-webtext", None, "human", "validation"),
    "tinycodes": V2Corpus("nampdn-ai/tiny-codes", None, "prompt", "validation"),  # + response
    "shakespeare_all": V2Corpus("Trelis/tiny-shakespeare", None, "Text", "test"),
    "tinystories": V2Corpus("roneneldan/TinyStories", None, "text", "validation"),
    "wikitext": V2Corpus("Salesforce/wikitext", "wikitext-103-raw-v1", "text", "validation"),
    "tinytextbooks": V2Corpus("nampdn-ai/tiny-textbooks", None, "text", "test"),
}


# ---- tokenizers ------------------------------------------------------------------------------
def tokenizer_ref(spec: str) -> str:
    """'hf:<ref>' -> <ref>."""
    if not isinstance(spec, str) or not spec.startswith(PREFIX) or not spec[len(PREFIX):]:
        raise UserError(f"--tokenizer must be gpt2, bytes or hf:<model or folder>, got {spec!r}")
    return spec[len(PREFIX):]


def resolve_ref(ref: str) -> str:
    """A folder (as given, or relative to $REPRSIM_DATA) as an absolute path; else the hub name."""
    for candidate in (Path(ref).expanduser(), data_root() / ref):
        if candidate.is_dir():
            return str(candidate.resolve())
    return ref


def load_tokenizer(ref: str):
    """AutoTokenizer of a local folder or a hub name in the HF cache (HF_HUB_OFFLINE respected)."""
    from transformers import AutoTokenizer

    where = resolve_ref(ref)
    if not Path(where).is_dir() and where.startswith(("/", ".", "~")):
        raise UserError(f"tokenizer folder {ref} not found")
    try:
        tok = AutoTokenizer.from_pretrained(where)
    except Exception as e:  # missing files, no network, gated repository
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"cannot load tokenizer {ref!r} from a local folder or the Hugging Face "
                        f"cache ({first}); {GATED_HELP}") from None
    if tok.eos_token_id is None:
        raise UserError(f"tokenizer {ref!r} has no EOS token")
    return tok


def tokenizer_hash(tok) -> str:
    """sha256 of the vocabulary (token -> id, sorted) and the EOS token: equal for every model
    that tokenises text the same way."""
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    blob = json.dumps({"vocab": vocab, "eos": [tok.eos_token, tok.eos_token_id]},
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def family(tok) -> str:
    return f"hf_{tokenizer_hash(tok)[:12]}"


def vocab_size(tok) -> int:
    return max(len(tok), max(tok.get_vocab().values()) + 1)


def choose_dtype(n_vocab: int, dtype: str | None, name: str) -> str:
    """uint16 when every id fits, else uint32; a forced dtype that cannot hold them is refused."""
    if dtype is None:
        return "uint16" if n_vocab - 1 <= np.iinfo(np.uint16).max else "uint32"
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be uint16 or uint32, got {dtype!r}")
    if n_vocab - 1 > np.iinfo(DTYPES[dtype]).max:
        raise UserError(f"tokenizer {name!r} has {n_vocab:,} tokens: ids up to {n_vocab - 1:,} do "
                        f"not fit {dtype} (max {np.iinfo(DTYPES[dtype]).max:,}); use --dtype uint32")
    return dtype


# ---- folders ---------------------------------------------------------------------------------
def data_dir(corpus: str, preset: str, fam: str, root=None) -> Path:
    return Path(root or data_root()) / "text" / corpus / f"{preset}_{fam}"


def read_meta(folder: Path) -> dict:
    path = Path(folder) / META
    if not path.is_file():
        raise UserError(f"{folder} is not prepared ({META} missing): run `reprsim prepare-text`")
    return read_json(path)


def stream(folder: Path, split: str) -> np.ndarray:
    """The token stream of a prepared folder, in the dtype its meta.json names (memory-mapped)."""
    meta = read_meta(folder)
    dtype = np.dtype(meta.get("dtype", "uint16"))
    path = Path(folder) / f"{split}.bin"
    if not path.is_file():
        raise UserError(f"{path} missing: prepare the corpus again")
    size = path.stat().st_size
    expected = meta.get(f"{split}_tokens")
    if size % dtype.itemsize or (expected is not None and size // dtype.itemsize != expected):
        raise UserError(f"{path}: {size} bytes, expected {expected} {dtype.name} tokens; prepare it again")
    if size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


# ---- documents ---------------------------------------------------------------------------------
def _local_records(data_files) -> tuple[list, bool]:
    """(records, from_txt) of local files: .txt one document per line, else datasets rows."""
    from .text import _check_files

    files, builder = _check_files(data_files)
    if builder == "text":
        lines = []
        for f in files:
            lines.extend(Path(f).read_text(encoding="utf-8").splitlines())
        return lines, True
    import datasets

    try:
        ds = datasets.load_dataset(builder, data_files=files, split="train")
    except Exception as e:
        raise UserError(f"cannot read {files[0]} as {builder}: {str(e).splitlines()[0]}") from None
    return ds, False


def _docs(records, corpus: str, from_txt: bool, eos: str, preset: str) -> list[str]:
    """The document texts of a list of records (or lines)."""
    if from_txt:
        return list(records)
    if corpus == "tinycodes":  # v2 joins with the EOS string; v1 with a newline
        sep = eos if preset == "v2" else "\n"
        if preset == "v2":
            return [r["prompt"] + sep + r["response"] for r in records]
        return [r["prompt"].strip() + sep + r["response"].strip() for r in records]
    if preset == "v2":
        field = V2_CORPORA[corpus].field
    else:
        from .text import get_corpus

        field = get_corpus(corpus).fields[0]
    try:
        return [r[field] for r in records]
    except KeyError:
        raise UserError(f"{corpus} records need the field {field!r}") from None


def _hub(name: str, config, split: str):
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"cannot load {name} ({split}) from the Hugging Face hub or cache ({first}); "
                        f"offline, give the corpus as local files with --data-files") from None


def _rows(ds) -> list:
    return ds if isinstance(ds, list) else ds.to_list()


def _parts(corpus: str, preset: str, data_files, eos: str) -> tuple[dict, dict]:
    """({"train": docs, "val": docs}, meta about the source and the split)."""
    if preset == "v2":
        if data_files:
            records, from_txt = _local_records(data_files)
            rows = _rows(records)
            n_val = max(1, int(len(rows) * V2_VAL_FRAC))
            if len(rows) < 2:
                raise UserError(f"{corpus}: {len(rows)} row(s); need at least 2 to split train/val")
            docs = _docs(rows, corpus, from_txt, eos, preset)
            return ({"train": docs[:-n_val], "val": docs[-n_val:]},
                    {"source": {"files": [str(Path(f).resolve()) for f in data_files]},
                     "split": f"the last {V2_VAL_FRAC:.0%} of the rows (at least 1) val"})
        spec = V2_CORPORA[corpus]
        out = {s: _docs(_rows(_hub(spec.hub, spec.config, name)), corpus, False, eos, preset)
               for s, name in (("train", "train"), ("val", spec.val_split))}
        return out, {"source": {"hub": spec.hub, "config": spec.config},
                     "split": f"train / {spec.val_split}"}
    from . import text as textdata

    spec = textdata.get_corpus(corpus)
    if spec.hub is None:  # shakespeare_all: one text, 90/10 by characters
        paths = textdata._shakespeare_input(data_files, textdata.corpus_dir(corpus))
        body = "".join(p.read_text(encoding="utf-8") for p in paths)
        cut = int(len(body) * textdata.SHAKESPEARE_TRAIN_FRAC)
        return ({"train": [body[:cut]], "val": [body[cut:]]},
                {"source": {"files": [str(p.resolve()) for p in paths]}, "split": "90/10 characters"})
    if data_files:
        records, from_txt = _local_records(data_files)
        source = {"files": [str(Path(f).resolve()) for f in data_files]}
    else:
        records, from_txt = _hub(spec.hub, spec.config, "train"), False
        source = {"hub": spec.hub, "config": spec.config}
    import datasets

    rows = _rows(records)
    order = datasets.Dataset.from_dict({"i": list(range(len(rows)))}).train_test_split(
        test_size=textdata.HF_TEST_SIZE, seed=textdata.HF_SPLIT_SEED, shuffle=True)
    docs = _docs(rows, corpus, from_txt, eos, preset)
    return ({s: [docs[i] for i in order[part]["i"]] for s, part in (("train", "train"), ("val", "test"))},
            {"source": source, "split": f"train_test_split({textdata.HF_TEST_SIZE}, "
                                        f"seed={textdata.HF_SPLIT_SEED})"})


# ---- prepare ---------------------------------------------------------------------------------
def _write(tok, docs: list[str], path: Path, dtype: str, eos_after: bool) -> int:
    """Tokenise `docs` (EOS after each when `eos_after`) into `path` atomically; the token count."""
    from ..paths import progress

    written = 0
    eos = [tok.eos_token_id] if eos_after else []
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for start in progress(range(0, len(docs), ENCODE_BATCH), desc=f"tokenizing {path.name}",
                          unit="batch", disable=len(docs) <= ENCODE_BATCH):
            ids = tok(docs[start:start + ENCODE_BATCH], add_special_tokens=False)["input_ids"]
            flat = np.fromiter((t for doc in ids for t in (*doc, *eos)), dtype=np.int64)
            f.write(flat.astype(DTYPES[dtype]).tobytes())
            written += flat.size
        f.flush()
        os.fsync(f.fileno())
    return written


def prepare(corpus: str, tokenizer: str, *, preset: str = "v2", data_files=None,
            dtype: str | None = None, root=None, force: bool = False) -> dict:
    """Tokenise a corpus with an HF tokenizer into its family folder; returns its meta.json."""
    from .text import get_corpus

    get_corpus(corpus)
    if preset not in PRESETS:
        raise UserError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    ref = tokenizer_ref(tokenizer)
    tok = load_tokenizer(ref)
    n_vocab = vocab_size(tok)
    dtype = choose_dtype(n_vocab, dtype, ref)
    digest = tokenizer_hash(tok)
    out = data_dir(corpus, preset, f"hf_{digest[:12]}", root)
    files = sorted(str(Path(f).expanduser().resolve()) for f in data_files or [])
    if not force and (out / META).is_file():
        old = read_json(out / META)
        if (old.get("tokenizer_hash") == digest and old.get("dtype") == dtype
                and sorted(old.get("source", {}).get("files", [])) == files):
            print(f"prepare-text: {corpus} already prepared in {out} (use --force to redo)")
            return old
    out.mkdir(parents=True, exist_ok=True)
    (out / META).unlink(missing_ok=True)  # written last: a half-prepared folder has none
    start = time.time()
    parts, meta = _parts(corpus, preset, data_files, tok.eos_token)
    eos_after = not (preset == "v1" and get_corpus(corpus).hub is None)
    for split, docs in parts.items():
        meta[f"{split}_tokens"] = _write(tok, docs, out / f"{split}.bin", dtype, eos_after)
        meta[f"{split}_documents"] = len(docs)
    meta.update(corpus=corpus, preset=preset, tokenizer=f"{PREFIX}{ref}", tokenizer_hash=digest,
                family=f"hf_{digest[:12]}", vocab_size=n_vocab, eot_token=tok.eos_token_id,
                eot_appended=eos_after, dtype=dtype, version=__version__,
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), seconds=round(time.time() - start, 3))
    atomic_write_json(out / META, meta)
    print(f"prepare-text: {corpus}: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val "
          f"tokens ({dtype}, vocabulary {n_vocab:,}) in {out}")
    return meta


def cli_prepare_text(args) -> int:
    """`reprsim prepare-text`: hf:<...> tokenizers or --preset v2 here, the rest in repr_sim.data.text."""
    if not (args.tokenizer.startswith(PREFIX) or getattr(args, "preset", None) == "v2"):
        from . import text

        return text.cli_prepare_text(args)
    if not args.tokenizer.startswith(PREFIX):
        raise UserError(f"--preset v2 tokenises with a model's own tokenizer: give --tokenizer "
                        f"hf:<model or folder>, not {args.tokenizer!r}")
    prepare(args.corpus, args.tokenizer, preset=args.preset or "v1", data_files=args.data_files,
            dtype=args.dtype, root=args.data_root, force=getattr(args, "force", False))
    return 0
