import gzip
import json

import numpy as np
import pytest

from engine.data.readers import detect_format, iter_text_documents, load_token_file, split_token_documents
from engine.data.store import TokenStore, natural_prior, validation_mask
from engine.data.tokenizer import byte_tokenizer, load_bpe, train_bpe
from engine.domains import Change
from engine.errors import DataError
from engine.project import Project
from tests.conftest import STDLIB


def test_detect_format():
    from pathlib import Path
    assert detect_format(Path("a.jsonl.gz"), "auto") == "jsonl"
    assert detect_format(Path("a.npy"), "auto") == "tokens"
    assert detect_format(Path("a.md"), "auto") == "text"
    assert detect_format(Path("a.md"), "jsonl") == "jsonl"


def test_jsonl_reader_and_errors(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"text": "one"}\n\n{"body": "two", "text": "three"}\n')
    assert list(iter_text_documents(f, "jsonl")) == ["one", "three"]
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(DataError, match=r"b.jsonl:2 is not valid JSON"):
        list(iter_text_documents(bad, "jsonl"))
    nofield = tmp_path / "c.jsonl"
    nofield.write_text('{"content": "x"}\n')
    with pytest.raises(DataError, match="no 'text' field; set text_field"):
        list(iter_text_documents(nofield, "jsonl"))


def test_gzip_jsonl(tmp_path):
    f = tmp_path / "a.jsonl.gz"
    with gzip.open(f, "wt") as g:
        g.write(json.dumps({"text": "zipped"}) + "\n")
    assert list(iter_text_documents(f, "jsonl")) == ["zipped"]


def test_token_files(tmp_path):
    arr = np.array([5, 6, 0, 7, 0, 8], dtype=np.uint16)
    np.save(tmp_path / "t.npy", arr)
    arr.tofile(tmp_path / "raw.npy")  # OLMo-style: raw memmap despite the .npy name
    assert np.array_equal(load_token_file(tmp_path / "t.npy", "uint16"), arr)
    assert np.array_equal(load_token_file(tmp_path / "raw.npy", "uint16"), arr)
    docs = split_token_documents(arr, 0)
    assert [d.tolist() for d in docs] == [[5, 6, 0], [7, 0], [8]]
    (tmp_path / "odd.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(DataError, match="whole number"):
        load_token_file(tmp_path / "odd.bin", "uint16")


def test_validation_mask_keeps_both_splits():
    assert validation_mask(np.array([0.9, 0.8, 0.7]), 0.05).tolist() == [False, False, True]
    assert validation_mask(np.array([0.01, 0.02]), 0.05).tolist() == [True, False]
    assert validation_mask(np.array([0.5]), 0.05).tolist() == [False]


def test_bpe_trains_saves_and_reloads(tmp_path):
    texts = [p.read_text() for p in sorted((STDLIB / "json").glob("*.py"))]
    tok = train_bpe(texts, 400, tmp_path / "tokenizer.json")
    again = load_bpe(tmp_path / "tokenizer.json")
    assert tok.fingerprint == again.fingerprint
    assert tok.vocab_size == 400 and tok.dtype == np.uint16
    ids = tok.encode("def decode(self, s):\n    return s")
    assert again.decode(ids) == "def decode(self, s):\n    return s"
    assert len(ids) < len("def decode(self, s):\n    return s")  # merges learned
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match="not a valid tokenizer"):
        load_bpe(tmp_path / "broken.json")


def test_token_store_counts_and_cache(small_project, tmp_path):
    p = small_project
    tokens = p.tokens()
    code = tokens["code"]
    assert code.train.dtype == np.uint16
    assert code.train_tokens > 1000 and code.val_tokens > 0
    # byte tokenizer: one token per byte plus one EOS per document
    assert code.train_tokens == code.train_bytes + code.train_docs
    assert code.val_tokens == code.val_bytes + code.val_docs
    assert (np.asarray(code.train) == 256).sum() == code.train_docs
    prior = natural_prior(tokens)
    assert abs(sum(prior.values()) - 1) < 1e-12 and set(prior) == {"code", "notes", "decimal"}
    # unchanged domain: not re-tokenized (same folder, same mtime)
    folder = TokenStore(p.cache / "tokens").path("code", code.key)
    mtime = (folder / "meta.json").stat().st_mtime_ns
    assert Project.load(p.root).tokens()["code"].key == code.key
    assert (folder / "meta.json").stat().st_mtime_ns == mtime
    # revised domain: new key, tokenized again
    f = sorted((p.root / "data/notes").iterdir())[0]
    f.write_text(f.read_text() + "\nnew line of notes\n")
    q = Project.load(p.root)
    q.stage(Change("revise", "notes"))
    staged = q.tokens()
    assert "notes" in staged
    assert q.cached_tokens(q.staged_domains())["notes"].key != tokens["notes"].key


def test_split_is_deterministic(small_project):
    a = small_project.tokens()["decimal"]
    import shutil
    shutil.rmtree(small_project.cache / "tokens")
    b = Project.load(small_project.root).tokens()["decimal"]
    assert np.array_equal(np.asarray(a.train), np.asarray(b.train)) and np.array_equal(np.asarray(a.val), np.asarray(b.val))


def test_single_document_domain_is_an_error(small_project):
    (small_project.root / "data/one.txt").write_text("only one document here")
    small_project.stage(Change("add", "one", sources=("data/one.txt",)))
    with pytest.raises(DataError, match="too few to hold out"):
        small_project.tokens()


def test_pretokenized_domain(small_project):
    tok = byte_tokenizer()
    ids = np.concatenate([np.append(np.frombuffer(t.encode(), np.uint8).astype(np.uint16), tok.eos_id)
                          for t in ["first doc", "second document", "third one", "fourth", "fifth text"]])
    np.save(small_project.root / "data/pre.npy", ids)
    small_project.stage(Change("add", "pre", sources=("data/pre.npy",)))
    t = small_project.tokens()["pre"]
    assert t.train_tokens + t.val_tokens == len(ids)
    assert t.train_bytes + t.val_bytes == sum(len(s) for s in ["first doc", "second document", "third one", "fourth", "fifth text"])


def test_out_of_vocab_token_file(small_project):
    np.save(small_project.root / "data/bad.npy", np.array([1, 2, 999, 256, 3, 256], dtype=np.uint16))
    small_project.stage(Change("add", "bad", sources=("data/bad.npy",)))
    with pytest.raises(DataError, match="outside the tokenizer's vocabulary"):
        small_project.tokens()


def test_natural_prior_needs_tokens():
    with pytest.raises(DataError):
        natural_prior({})


def test_local_hugging_face_tokenizer_folder(small_project, tmp_path):
    """kind = "hf": a local tokenizer folder loaded offline with AutoTokenizer."""
    import dataclasses

    from transformers import PreTrainedTokenizerFast

    texts = [p.read_text() for p in sorted((STDLIB / "json").glob("*.py"))]
    train_bpe(texts, 500, tmp_path / "tok.json")
    PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tok.json"), eos_token="<|endoftext|>").save_pretrained(tmp_path / "hf")
    p = small_project
    p.settings = dataclasses.replace(p.settings, tokenizer=dataclasses.replace(p.settings.tokenizer, kind="hf", path=str(tmp_path / "hf")))
    tok = p.tokenizer()
    assert tok.vocab_size == 500 and tok.fingerprint.startswith("hf-")
    tokens = p.tokens()["code"]
    assert tokens.train_tokens < tokens.train_bytes  # BPE merges: fewer tokens than bytes
    assert (np.asarray(tokens.train) == tok.eos_id).sum() == tokens.train_docs
