"""Pretraining corpus: read documents, clean, (train a tokenizer,) tokenize, pack into blocks, cache.

    documents --strip/drop empty/dedupe--> train | validation split
              --tokenize (batched, on every core)--> one token stream, [SEP] after each document
              --cut--> blocks of max_seq_length: [CLS] + max_seq_length-1 stream tokens (the last shorter;
                       for a causal LM, max_seq_length stream tokens, documents ended by eos)
    (for NSP / SOP instead: each document --sentences, tokenized--> [CLS] A [SEP] B [SEP] pairs, data.pairs)

Everything is streamed: documents are read a line (or paragraph) at a time, tokenized in batches of
about a megabyte of text, and the blocks are appended to an Arrow file as they are cut, so memory
stays flat however large the corpus. The files live under cache_dir/corpus/<fingerprint>/ (memory-
mapped when read), keyed by the data files' content and every setting that changes the tokens, so a
second run with the same inputs, from any output_dir, loads them at once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from llmkit.data.files import first_rows, iter_documents, sentences
from llmkit.data.spans import raw_length
from llmkit.data.tokenizer import FORMAT_VERSION, choose_tokenizer, fingerprint_files
from llmkit.errors import LlmkitError
from llmkit.paths import cache_root, resolve_path, split_file, split_key

if TYPE_CHECKING:
    from llmkit.config import Config, DataSection

SPLIT_SEED = 0  # the held-out validation documents do not change with the training seed
PRETRAINING_VALIDATION_PERCENTAGE = 5.0  # data.validation_split_percentage unset
CORPUS_FORMAT = 2  # 2: streamed Arrow files; bump when the layout changes, so old caches are rebuilt
BATCH_CHARS = 1 << 20  # text tokenized per batch: big enough to keep every core busy, small in memory
BATCH_DOCUMENTS = 1000


@dataclass(frozen=True)
class CorpusLayout:
    """How the objective wants its examples cut (the objective says; llmkit.objectives)."""

    causal: bool = False  # one stream of blocks without a [CLS], eos after each document
    pair_task: str | None = None  # `nsp` / `sop`: segment pairs instead of blocks
    whole_words: bool = False  # a `word_starts` column flags each token that begins a word
    span_noise: tuple[float, float] | None = None  # T5's (noise density, mean span length): blocks that corrupt
    # to max_seq_length tokens, so longer (llmkit.data.spans.raw_length)
    sentinel_tokens: int = 0  # the T5 sentinels (<extra_id_N>) the tokenizer must have (llmkit.data.spans)


@dataclass
class Corpus:
    train: object  # datasets.Dataset with an `input_ids` column of packed blocks (or of segment pairs)
    validation: object | None
    tokenizer: object
    folder: Path
    info: dict


def prepare_corpus(cfg: Config, layout: CorpusLayout) -> Corpus:
    """The packed corpus for `cfg`, built once and then read from the cache."""
    train_path = split_file(cfg.data, "train")
    if train_path is None:
        raise LlmkitError("data.train_file: required for pretraining (a .txt file or a table with a text column)")
    validation_path = split_file(cfg.data, "validation")
    fingerprint = _fingerprint(cfg.data, layout, [train_path, validation_path], _tokenizer_identity(cfg))
    folder = cache_root(cfg.data) / "corpus" / fingerprint
    if not (folder / "info.json").exists():
        _build(cfg, layout, train_path, validation_path, folder)
    return _load(folder)


def evaluation_blocks(cfg: Config, split: str, tokenizer, layout: CorpusLayout):
    """Packed blocks (or segment pairs) of data.<split>_file, or the held-out part of the corpus for `validation`."""
    import datasets

    key, path = split_key(split), split_file(cfg.data, split)
    if path is None:
        blocks = prepare_corpus(cfg, layout).validation if split == "validation" and cfg.data.train_file else None
        if blocks is None:
            raise LlmkitError(f"{key}: required to evaluate on the {split} split")
        return first_rows(blocks, cfg.data.max_eval_samples)
    identity = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest() if tokenizer.is_fast \
        else tokenizer.name_or_path
    target = cache_root(cfg.data) / "blocks" / f"{_fingerprint(cfg.data, layout, [path], identity)}.arrow"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        try:
            _write_examples(cfg.data, layout, documents(cfg.data, path, key), tokenizer, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return first_rows(datasets.Dataset.from_file(str(target)), cfg.data.max_eval_samples)


def _fingerprint(d: DataSection, layout: CorpusLayout, paths: list[str | None], tokenizer_identity) -> str:
    settings = {
        "version": [FORMAT_VERSION, CORPUS_FORMAT],
        "files": fingerprint_files(paths),
        "data": [d.text_column, d.max_seq_length, d.max_train_samples, d.document_boundary, held_out_percentage(d),
                 d.dedupe, d.header, d.column_names, d.format, d.encoding, d.line_pattern, d.skip_bad_rows],
        "whole_words": layout.whole_words,
        "causal": layout.causal,
        "pairs": layout.pair_task,
        "spans": [layout.span_noise, layout.sentinel_tokens],
        "tokenizer": tokenizer_identity,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


def held_out_percentage(data: DataSection) -> float:
    """The share of documents pretraining holds out for validation when there is no validation_file."""
    return PRETRAINING_VALIDATION_PERCENTAGE if data.validation_split_percentage is None \
        else data.validation_split_percentage


def _tokenizer_identity(cfg: Config):
    source = cfg.tokenizer.name_or_path or cfg.model.name_or_path
    if source is None:
        return cfg.tokenizer.model_dump(exclude={"name_or_path"})
    path = resolve_path(source)
    if os.path.isdir(path):
        files = sorted(str(p) for p in Path(path).iterdir() if p.name.startswith(("tokenizer", "vocab", "merges",
                                                                                   "special_tokens", "spiece")))
        return fingerprint_files(files)
    return source  # a hub id


def _build(cfg: Config, layout: CorpusLayout, train_path: str, validation_path: str | None, folder: Path) -> None:
    started = time.perf_counter()
    data, limit = cfg.data, cfg.data.max_train_samples
    count = sum(1 for _ in documents(data, train_path, "data.train_file", limit))
    held_out: set[int] = set()
    if validation_path is None and held_out_percentage(data) > 0 and count >= 2:
        size = max(1, round(count * held_out_percentage(data) / 100))
        held_out = set(random.Random(SPLIT_SEED).sample(range(count), size))

    def split(keep_held_out: bool) -> Callable[[], Iterator[str]]:
        return lambda: (doc for i, doc in enumerate(documents(data, train_path, "data.train_file", limit))
                        if (i in held_out) == keep_held_out)

    # Keyed by what it is trained on: the file, and which of its documents are training ones.
    tokenizer = choose_tokenizer(cfg, split(False),
                                 json.dumps([fingerprint_files([train_path]), count, len(held_out)]),
                                 layout.sentinel_tokens)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        tokenizer.save_pretrained(tmp / "tokenizer")
        info = {"train_file": train_path, "validation_file": validation_path,
                **_write_examples(data, layout, split(False)(), tokenizer, tmp / "train.arrow", "train")}
        validation = split(True)() if held_out else documents(data, validation_path, "data.validation_file") \
            if validation_path else None
        if validation is not None:
            info.update(_write_examples(data, layout, validation, tokenizer, tmp / "validation.arrow", "validation"))
        else:
            info.update(validation_documents=0, validation_examples=0, validation_tokens=0)
        info.update(max_seq_length=cfg.data.max_seq_length, vocab_size=len(tokenizer),
                    seconds=round(time.perf_counter() - started, 2))
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
        os.replace(tmp, folder)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if (folder / "info.json").exists():  # built meanwhile by another process
            return
        raise LlmkitError(f"data.cache_dir: cannot write the preprocessed corpus to {folder.parent}: {e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load(folder: Path) -> Corpus:
    import datasets
    from transformers import AutoTokenizer

    validation = folder / "validation.arrow"
    return Corpus(
        train=datasets.Dataset.from_file(str(folder / "train.arrow")),
        validation=datasets.Dataset.from_file(str(validation)) if validation.exists() else None,
        tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"),
        folder=folder,
        info=json.loads((folder / "info.json").read_text()),
    )


def documents(data: DataSection, path: str, key: str, limit: int | None = None) -> Iterator[str]:
    """The file's stripped non-empty documents, streamed (exact duplicates dropped with data.dedupe,
    the first `limit` only). Fails if there are none."""
    seen: set[bytes] = set()  # 8-byte digests: the one thing that grows with the corpus
    count = 0
    for text in iter_documents(path, key, data):
        text = (text or "").strip()
        if not text:
            continue
        if data.dedupe:
            digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
            if digest in seen:
                continue
            seen.add(digest)
        if count == limit:
            return
        count += 1
        yield text
    if count == 0:
        raise LlmkitError(f"{key}: {path} has no non-empty documents")


def _write_examples(data: DataSection, layout: CorpusLayout, documents: Iterator[str], tokenizer, path: Path,
                    name: str = "eval") -> dict:
    """Tokenize and write `documents` as packed blocks, or as segment pairs for NSP / SOP. Returns the counts."""
    return (_write_pairs if layout.pair_task else _write_blocks)(data, layout, documents, tokenizer, path, name)


def _write_blocks(data: DataSection, layout: CorpusLayout, documents: Iterator[str], tokenizer, path: Path,
                  name: str) -> dict:
    """Tokenize `documents` batch by batch, join them into one stream with a separator after each,
    and append blocks of max_seq_length to an Arrow file as they fill. Returns the counts. With
    pretrain.whole_word_mask a `word_starts` column flags each token that begins a word."""
    import numpy as np
    import pyarrow as pa

    if layout.causal:  # a causal LM reads one stream: no block-start token, eos after each document
        start, separator = None, tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    else:
        start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        separator = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if separator is None:
        raise LlmkitError("tokenizer: needs a separator token (sep_token or eos_token) to mark document ends")
    length = raw_length(data.max_seq_length, *layout.span_noise) if layout.span_noise \
        else data.max_seq_length - (start is not None)  # stream tokens per block
    words = layout.whole_words
    encode = _encoder(tokenizer, words)
    # column: (arrow type, numpy type, value at a block's start and after each document)
    columns = {"input_ids": (pa.int32(), np.int32, start, separator)}
    if words:
        columns["word_starts"] = (pa.bool_(), np.bool_, True, True)
    schema = pa.schema([(column, pa.list_(kind)) for column, (kind, *_) in columns.items()])
    counts = {f"{name}_documents": 0, f"{name}_examples": 0, f"{name}_tokens": 0}
    carry = {column: np.zeros(0, dtype=dtype) for column, (_, dtype, *_) in columns.items()}

    def write(writer, streams: dict, end: int) -> None:
        arrays = []
        for column, (_, dtype, head, _) in columns.items():
            stream = streams[column][:end]
            rows = stream.reshape(-1, length) if end % length == 0 else stream[None, :]
            if start is not None:
                rows = np.concatenate([np.full((len(rows), 1), head, dtype=dtype), rows], axis=1)
            offsets = np.arange(len(rows) + 1, dtype=np.int32) * rows.shape[1]
            arrays.append(pa.ListArray.from_arrays(offsets, rows.ravel()))
        writer.write_batch(pa.record_batch(arrays, schema=schema))
        counts[f"{name}_examples"] += len(rows)
        counts[f"{name}_tokens"] += rows.size

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in _batches(documents):
            encoded = encode(batch)  # column -> one list per document
            counts[f"{name}_documents"] += len(batch)
            streams = {}
            for column, (_, dtype, _, after) in columns.items():
                docs = encoded[column]
                joined = np.fromiter(itertools.chain.from_iterable(itertools.chain(doc, (after,)) for doc in docs),
                                     dtype=dtype, count=sum(map(len, docs)) + len(docs))
                streams[column] = np.concatenate([carry[column], joined])
            total = len(streams["input_ids"])
            full = total - total % length
            if full:
                write(writer, streams, full)
            carry = {column: stream[full:] for column, stream in streams.items()}
        if len(carry["input_ids"]):
            write(writer, carry, len(carry["input_ids"]))
    return counts


def _write_pairs(data: DataSection, layout: CorpusLayout, documents: Iterator[str], tokenizer, path: Path,
                 name: str) -> dict:
    """Cut each batch of documents into [CLS] A [SEP] B [SEP] examples (data.pairs) and append them to
    an Arrow file with their token_type_ids and next_sentence_label."""
    import numpy as np
    import pyarrow as pa

    from llmkit.data.pairs import Document, PairMaker

    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise LlmkitError("tokenizer: sentence-pair pretraining needs a [CLS] and a [SEP] token (cls_token, sep_token)")
    task, words = layout.pair_task, layout.whole_words
    encode = _encoder(tokenizer, words)
    special = {"input_ids": (tokenizer.cls_token_id, tokenizer.sep_token_id)}  # column: value at [CLS], at [SEP]
    if words:
        special["word_starts"] = (True, True)
    types = {"input_ids": (pa.int32(), np.int32), "word_starts": (pa.bool_(), np.bool_),
             "token_type_ids": (pa.int8(), np.int8)}
    lists = [*special, "token_type_ids"]
    schema = pa.schema([(column, pa.list_(types[column][0])) for column in lists]
                       + [("next_sentence_label", pa.int8())])
    maker = PairMaker(task, data.max_seq_length - 3, special, seed=SPLIT_SEED)
    counts = {f"{name}_documents": 0, f"{name}_examples": 0, f"{name}_tokens": 0}
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in _batches(documents):
            split = [sentences(text) for text in batch]
            encoded = encode([sentence for document in split for sentence in document])
            docs, first = [], 0
            for document in split:
                pieces = {column: encoded[column][first:first + len(document)] for column in special}
                ends = np.cumsum([len(ids) for ids in pieces["input_ids"]])
                docs.append(Document({column: np.fromiter(itertools.chain.from_iterable(values), dtype=types[column][1])
                                      for column, values in pieces.items()}, np.unique(ends[ends > 0])))
                first += len(document)
            rows = maker.rows(docs)
            counts[f"{name}_documents"] += len(batch)
            if not rows["input_ids"]:
                continue
            lengths = np.array([len(ids) for ids in rows["input_ids"]])
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            arrays = [pa.ListArray.from_arrays(offsets, np.concatenate(rows[column])) for column in lists]
            labels = pa.array(rows["next_sentence_label"], pa.int8())
            writer.write_batch(pa.record_batch([*arrays, labels], schema=schema))
            counts[f"{name}_examples"] += len(lengths)
            counts[f"{name}_tokens"] += int(lengths.sum())
    if task == "nsp" and counts[f"{name}_documents"] < 2:
        raise LlmkitError(f"pretrain.objective: next-sentence prediction takes random segments from other documents, "
                          f"and the {name} text has one (see data.document_boundary)")
    return counts


def _encoder(tokenizer, words: bool) -> Callable[[list[str]], dict[str, list[list]]]:
    """Token ids of a batch of texts, no special tokens (and with `words`, whether each token starts a
    word, from the tokenizer's own word ids: any fast tokenizer, not only WordPiece's `##`). A fast
    tokenizer's Rust core is called directly, without offsets or padding: ~1.7x `tokenizer(texts)`."""
    if not tokenizer.is_fast:
        if words:
            raise LlmkitError("pretrain.whole_word_mask: needs a fast tokenizer (one with a tokenizer.json), "
                              "which reports the word each token comes from")
        return lambda texts: {"input_ids": tokenizer(texts, add_special_tokens=False)["input_ids"]}
    from tokenizers import Tokenizer

    core = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    core.no_padding()
    core.no_truncation()
    if not words:
        return lambda texts: {"input_ids": [e.ids for e in core.encode_batch_fast(texts, add_special_tokens=False)]}

    def starts(word_ids: list[int | None]) -> list[bool]:
        return [w is None or w != previous for previous, w in zip([None, *word_ids], word_ids)]

    def encode(texts):
        encodings = core.encode_batch(texts, add_special_tokens=False)
        return {"input_ids": [e.ids for e in encodings], "word_starts": [starts(e.word_ids) for e in encodings]}
    return encode


def _batches(documents: Iterator[str]) -> Iterator[list[str]]:
    batch, size = [], 0
    for doc in documents:
        batch.append(doc)
        size += len(doc)
        if size >= BATCH_CHARS or len(batch) == BATCH_DOCUMENTS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
