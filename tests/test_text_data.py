"""Text corpora: tokenizers, prepare (txt / jsonl / json / parquet, shakespeare), samplers, textgen."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from _text_fixtures import EOT, tiny_bpe, write_records
from hypothesis import given, settings
from hypothesis import strategies as st

from repr_sim import splits
from repr_sim.cli import main
from repr_sim.data import text as textdata
from repr_sim.data import textgen
from repr_sim.errors import UserError

DOCS = [
    "Once upon a time there was a cat.",
    "",  # an empty document: kept, it becomes a lone EOT
    "héllo wörld — unicode ✓ 中文",
    "the thing in the ring  with  spaces",
    "tabs\tand 'quotes' and \"double\"",
] + [f"document number {i} of the corpus" for i in range(35)]


def decode_docs(stream: np.ndarray, enc) -> list[str]:
    """The documents of a stream with an EOT after every document."""
    eot = enc.encode_single_token(EOT)
    ids = stream.tolist()
    assert ids and ids[-1] == eot, "every document, the last one too, ends with EOT"
    docs, cur = [], []
    for t in ids:
        if t == eot:
            docs.append(enc.decode(cur))
            cur = []
        else:
            cur.append(t)
    return docs


def expected_split(docs: list[str]) -> tuple[list[str], list[str]]:
    """docs/protocol.md section 2's split applied to the raw documents."""
    import datasets

    parts = datasets.Dataset.from_dict({"d": docs}).train_test_split(test_size=0.05, seed=2357)
    return list(parts["train"]["d"]), list(parts["test"]["d"])


def one_error_line(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, (rc, err)
    return err[0]


# ---- tokenizers --------------------------------------------------------------------------
def test_bytes_tokenizer_is_utf8_bytes_plus_eot():
    enc = textdata.get_tokenizer("bytes")
    text = "héllo\n\n  wörld ✓ 中文\t!"
    assert enc.encode_ordinary(text) == list(text.encode("utf-8"))
    assert enc.decode(enc.encode_ordinary(text)) == text
    assert textdata.eot_id(enc) == 256 and enc.n_vocab == 257
    assert enc.encode(EOT, allowed_special="all") == [256]


def test_gpt2_offline_error_says_how_to_provide_the_files(monkeypatch, capsys, tmp_path, reprsim_env):
    import tiktoken

    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tk"))
    textdata._named_tokenizer.cache_clear()
    f = tmp_path / "d.txt"
    f.write_text("a\nb\n", encoding="utf-8")
    line = one_error_line(capsys, ["prepare-text", "tinystories", "--data-files", str(f)])
    assert "gpt2" in line and "TIKTOKEN_CACHE_DIR" in line and str(tmp_path / "tk") in line
    # the cache names tiktoken looks for: sha1 of the two URLs
    import hashlib

    for name in ("vocab.bpe", "encoder.json"):
        url = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/" + name
        assert hashlib.sha1(url.encode()).hexdigest() in line
    textdata._named_tokenizer.cache_clear()


# ---- prepare: Hugging Face corpora from local files ---------------------------------------
def test_prepare_txt_is_one_document_per_line_with_eot(reprsim_env, tmp_path):
    f = tmp_path / "stories.txt"
    f.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    meta = textdata.prepare("tinystories", data_files=[f], tokenizer="bytes")
    enc = textdata.get_tokenizer("bytes")
    train = decode_docs(textdata.load_stream("tinystories", "train"), enc)
    val = decode_docs(textdata.load_stream("tinystories", "val"), enc)
    want_train, want_val = expected_split(DOCS)
    assert (train, val) == (want_train, want_val)
    assert len(val) == math.ceil(0.05 * len(DOCS))
    assert Counter(train + val) == Counter(DOCS)
    assert meta["tokenizer"] == "bytes" and meta["eot_token"] == 256 and meta["eot_appended"]
    assert meta["train_tokens"] == sum(len(d.encode()) + 1 for d in want_train)
    assert meta["train_documents"] == len(want_train)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_prepare_tinycodes_records_with_a_bpe(reprsim_env, tmp_path, suffix):
    records = [{"prompt": f"  Write code {i}\n", "response": f"\n def f{i}():  return {i} \n",
                "extra": i} for i in range(30)]
    f = write_records(tmp_path / f"codes{suffix}", records)
    enc = tiny_bpe()
    meta = textdata.prepare("tinycodes", data_files=[f], tokenizer=enc)
    docs = [r["prompt"].strip() + "\n" + r["response"].strip() for r in records]
    train = decode_docs(textdata.load_stream("tinycodes", "train"), enc)
    val = decode_docs(textdata.load_stream("tinycodes", "val"), enc)
    assert (train, val) == expected_split(docs)
    assert meta["tokenizer"] == "tinybpe" and meta["eot_token"] == enc.n_vocab - 1
    assert max(textdata.load_stream("tinycodes", "train")) < enc.n_vocab


def test_prepare_cli_gpt2_path_in_parallel(reprsim_env, tmp_path, monkeypatch):
    """--tokenizer gpt2 through the CLI, two tokeniser processes (tiny BPE in gpt2's place)."""
    monkeypatch.setattr(textdata, "gpt2_encoding", tiny_bpe)
    textdata._named_tokenizer.cache_clear()
    records = [{"human": f"the web page {i} in the ring", "bot": "ignored"} for i in range(2400)]
    f = write_records(tmp_path / "web.parquet", records)
    rc = main(["prepare-text", "tinywebtext", "--data-files", str(f), "--tokenizer", "gpt2",
               "--num-proc", "2"])
    textdata._named_tokenizer.cache_clear()
    assert rc == 0
    enc = tiny_bpe()
    train = decode_docs(textdata.load_stream("tinywebtext", "train"), enc)
    val = decode_docs(textdata.load_stream("tinywebtext", "val"), enc)
    assert (train, val) == expected_split([r["human"] for r in records])
    assert textdata.read_meta("tinywebtext")["val_documents"] == 120


def test_shakespeare_is_a_90_10_character_split_without_eot(reprsim_env, tmp_path):
    text = "".join(f"ROMEO {i}:\nO wörld, thou art ✓\n\n" for i in range(50))
    f = tmp_path / "input.txt"
    f.write_text(text, encoding="utf-8")
    meta = textdata.prepare("shakespeare_all", data_files=[f], tokenizer="bytes")
    enc = textdata.get_tokenizer("bytes")
    cut = int(len(text) * 0.9)  # characters, not bytes
    train = textdata.load_stream("shakespeare_all", "train")
    val = textdata.load_stream("shakespeare_all", "val")
    assert enc.decode(train.tolist()) == text[:cut]
    assert enc.decode(val.tolist()) == text[cut:]
    assert 256 not in set(train.tolist()) | set(val.tolist())
    assert not meta["eot_appended"]


def test_prepare_is_idempotent_and_force_redoes(reprsim_env, tmp_path, capsys):
    f = tmp_path / "w.txt"
    f.write_text("\n".join(DOCS), encoding="utf-8")
    first = textdata.prepare("wikitext", data_files=[f], tokenizer="bytes")
    again = textdata.prepare("wikitext", data_files=[f], tokenizer="bytes")
    assert "already prepared" in capsys.readouterr().out and again == first
    redone = textdata.prepare("wikitext", data_files=[f], tokenizer="bytes", force=True)
    assert redone["created"] >= first["created"] and redone["train_tokens"] == first["train_tokens"]


def test_prepare_bad_input_one_line_each(reprsim_env, tmp_path, capsys):
    assert "unknown corpus 'novels'" in one_error_line(capsys, ["prepare-text", "novels", "--tokenizer", "bytes"])
    missing = tmp_path / "nope.txt"
    assert "not found" in one_error_line(
        capsys, ["prepare-text", "tinystories", "--data-files", str(missing), "--tokenizer", "bytes"])
    bad = write_records(tmp_path / "x.jsonl", [{"story": "a"}, {"story": "b"}])
    line = one_error_line(capsys, ["prepare-text", "tinystories", "--data-files", str(bad), "--tokenizer", "bytes"])
    assert "text" in line and "missing" in line
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n")
    assert "unsupported" in one_error_line(
        capsys, ["prepare-text", "tinystories", "--data-files", str(csv), "--tokenizer", "bytes"])
    assert "input.txt" in one_error_line(capsys, ["prepare-text", "shakespeare_all", "--tokenizer", "bytes"])
    assert not (textdata.corpus_dir("tinystories") / "meta.json").exists()


def test_missing_stream_is_one_clear_error(reprsim_env):
    with pytest.raises(UserError, match="not prepared.*prepare-text tinystories"):
        textdata.load_stream("tinystories", "train")


# ---- samplers ----------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(n_tokens=st.integers(200, 20_000), block=st.integers(1, 40), frac=st.floats(0, 1),
       seed=st.integers(0, 10_000), num_chunks=st.sampled_from([4, 10, 80]))
def test_windows_stay_inside_the_models_chunks(n_tokens, block, frac, seed, num_chunks):
    if n_tokens // num_chunks < block + 1:
        with pytest.raises(UserError):
            splits.chunk_split(n_tokens, frac, block_size=block, num_chunks=num_chunks, seed=seed)
        return
    split = splits.chunk_split(n_tokens, frac, block_size=block, num_chunks=num_chunks, seed=seed)
    positions = np.arange(n_tokens, dtype=np.int64)  # token value = its position
    for chunks in (split.chunks_a, split.chunks_b):
        sampler = textdata.TokenWindows(positions, chunks, block + 1)
        w = sampler.windows(np.random.default_rng(seed), 300)
        assert w.shape == (300, block + 1)
        assert (np.diff(w, axis=1) == 1).all()  # contiguous tokens of the stream
        starts, ends = w[:, 0], w[:, -1] + 1
        inside = np.zeros(len(w), dtype=bool)
        for s, e in chunks:
            inside |= (starts >= s) & (ends <= e)
        assert inside.all(), "a window left the model's chunks or crossed a boundary"


def test_windows_cover_every_valid_start_uniformly():
    stream = np.arange(100, dtype=np.int64)
    ranges = [(0, 10), (50, 70)]  # 10 - 4 + 1 = 7 and 17 valid starts of 4-token windows
    sampler = textdata.TokenWindows(stream, ranges, 4)
    starts = sampler.starts(np.random.default_rng(0), 48_000)
    valid = list(range(0, 7)) + list(range(50, 67))
    counts = Counter(starts.tolist())
    assert sorted(counts) == valid
    expected = 48_000 / len(valid)
    assert all(abs(c - expected) < 5 * math.sqrt(expected) for c in counts.values())


def test_window_longer_than_a_range_is_rejected():
    with pytest.raises(UserError, match="cannot hold a window"):
        textdata.TokenWindows(np.arange(100), [(0, 10)], 11)


def test_mixed_windows_pick_a_source_uniformly_and_stay_in_it():
    streams = [np.full(50 + 10 * i, i, dtype=np.uint16) for i in range(3)]
    mixed = textdata.MixedWindows([textdata.TokenWindows(s, None, 8) for s in streams])
    w = mixed.windows(np.random.default_rng(1), 9000)
    assert (w == w[:, :1]).all()  # every window from one source
    counts = np.bincount(w[:, 0], minlength=3)
    assert all(abs(c - 3000) < 5 * math.sqrt(3000) for c in counts)


# ---- textgen ------------------------------------------------------------------------------
def _words(text: str) -> set[str]:
    import re

    return set(re.findall(r"[A-Za-z]{3,}", text))


def test_textgen_is_deterministic_and_domains_are_distinct(tmp_path):
    assert textgen.generate("wikitext", 5000, seed=3) == textgen.generate("wikitext", 5000, seed=3)
    assert textgen.generate("wikitext", 5000, seed=3) != textgen.generate("wikitext", 5000, seed=4)
    vocab = {}
    for domain in textgen.DOMAINS:
        docs = textgen.generate(domain, 20_000, seed=0)
        assert sum(len(d) for d in docs) >= 19_000
        assert all("\n" not in d and "\r" not in d for d in docs)  # one document per line
        vocab[domain] = _words(" ".join(docs))
    names = list(vocab)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            jaccard = len(vocab[a] & vocab[b]) / len(vocab[a] | vocab[b])
            assert jaccard < 0.15, (a, b, jaccard)


def test_textgen_files_prepare_with_the_byte_tokenizer(reprsim_env, tmp_path):
    files = textgen.write_corpora(tmp_path / "gen", 4000, seed=1)
    assert set(files) == set(textdata.CORPORA)
    for corpus, path in files.items():
        meta = textdata.prepare(corpus, data_files=[path], tokenizer="bytes")
        if corpus == "shakespeare_all":
            text = path.read_text(encoding="utf-8")
            assert "\n\n" in text and text.splitlines()[0].endswith(":")
            assert meta["train_tokens"] + meta["val_tokens"] == len(text.encode())
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            assert meta["train_documents"] + meta["val_documents"] == len(lines)
