"""Pretraining corpus: read documents, clean, (train a tokenizer,) tokenize, pack into blocks, cache.

    documents --strip/drop empty/dedupe--> train | validation split
              --tokenize (batched, parallel)--> one token stream per batch, [SEP] after each document
              --cut--> blocks of max_seq_length: [CLS] + max_seq_length-1 stream tokens (last block shorter)

The result is saved under cache_dir/corpus/<fingerprint>/ (Arrow files, memory-mapped when read),
keyed by the data files' content and every setting that changes the tokens, so a second run with
the same inputs, from any output_dir, loads it at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from llmkit.config import Config, cache_root, data_path, resolve_path
from llmkit.data.files import first_rows, iter_texts, read_file, require_columns
from llmkit.data.tokenizer import FORMAT_VERSION, choose_tokenizer, fingerprint_files
from llmkit.errors import LlmkitError

SPLIT_SEED = 0  # the held-out validation documents do not change with the training seed
PACK_BATCH = 1000  # documents per packing batch; only a batch's last block can be short


@dataclass
class Corpus:
    train: object  # datasets.Dataset with an `input_ids` column of packed blocks
    validation: object | None
    tokenizer: object
    folder: Path
    info: dict


def prepare_corpus(cfg: Config) -> Corpus:
    """The packed corpus for `cfg`, built once and then read from the cache."""
    train_path = data_path(cfg, "train_file")
    if train_path is None:
        raise LlmkitError("data.train_file: required for pretraining (a .txt file or a table with a text column)")
    validation_path = data_path(cfg, "validation_file")
    folder = cache_root(cfg) / "corpus" / _fingerprint(cfg, train_path, validation_path)
    if not (folder / "info.json").exists():
        _build(cfg, train_path, validation_path, folder)
    return _load(folder)


def evaluation_blocks(cfg: Config, split: str, tokenizer):
    """Packed blocks of data.<split>_file, or the held-out part of the corpus for `validation`."""
    key = f"data.{split}_file"
    path = data_path(cfg, f"{split}_file")
    if path is not None:
        blocks = _pack(cfg, _documents(cfg, path, key), tokenizer)
    else:
        blocks = prepare_corpus(cfg).validation if split == "validation" and cfg.data.train_file else None
        if blocks is None:
            raise LlmkitError(f"{key}: required to evaluate on the {split} split")
    return first_rows(blocks, cfg.data.max_eval_samples)


def _fingerprint(cfg: Config, train_path: str, validation_path: str | None) -> str:
    d = cfg.data
    settings = {
        "version": FORMAT_VERSION,
        "files": fingerprint_files([train_path, validation_path]),
        "data": [d.text_column, d.max_seq_length, d.max_train_samples, d.document_boundary,
                 d.validation_split_percentage, d.dedupe],
        "tokenizer": _tokenizer_identity(cfg),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


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


def _build(cfg: Config, train_path: str, validation_path: str | None, folder: Path) -> None:
    started = time.perf_counter()
    train_docs = _documents(cfg, train_path, "data.train_file")
    train_docs = first_rows(train_docs, cfg.data.max_train_samples)
    if validation_path is not None:
        validation_docs = _documents(cfg, validation_path, "data.validation_file")
    elif cfg.data.validation_split_percentage > 0 and len(train_docs) >= 2:
        split = train_docs.train_test_split(test_size=max(1, round(len(train_docs) * cfg.data.validation_split_percentage / 100)),
                                            seed=SPLIT_SEED, shuffle=True)
        train_docs, validation_docs = split["train"], split["test"]
    else:
        validation_docs = None

    tokenizer = choose_tokenizer(cfg, lambda: iter_texts(train_docs, ["text"]),
                                 json.dumps([fingerprint_files([train_path]), len(train_docs)]))
    train_blocks = _pack(cfg, train_docs, tokenizer)
    validation_blocks = _pack(cfg, validation_docs, tokenizer) if validation_docs is not None else None

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        tokenizer.save_pretrained(tmp / "tokenizer")
        train_blocks.save_to_disk(str(tmp / "train"))
        if validation_blocks is not None:
            validation_blocks.save_to_disk(str(tmp / "validation"))
        info = {
            "train_file": train_path, "validation_file": validation_path,
            "train_documents": len(train_docs), "validation_documents": len(validation_docs or []),
            "train_blocks": len(train_blocks), "validation_blocks": len(validation_blocks or []),
            "train_tokens": _count_tokens(train_blocks),
            "validation_tokens": _count_tokens(validation_blocks) if validation_blocks is not None else 0,
            "max_seq_length": cfg.data.max_seq_length, "vocab_size": len(tokenizer),
            "seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / "info.json").write_text(json.dumps(info, indent=2))
        os.replace(tmp, folder)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if (folder / "info.json").exists():  # built meanwhile by another process
            return
        raise LlmkitError(f"data.cache_dir: cannot write the preprocessed corpus to {folder.parent}: {e}") from None


def _load(folder: Path) -> Corpus:
    import datasets
    from transformers import AutoTokenizer

    validation = folder / "validation"
    return Corpus(
        train=datasets.load_from_disk(str(folder / "train")),
        validation=datasets.load_from_disk(str(validation)) if validation.exists() else None,
        tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"),
        folder=folder,
        info=json.loads((folder / "info.json").read_text()),
    )


def _documents(cfg: Config, path: str, key: str):
    """Stripped, non-empty documents in a `text` column (optionally exact-deduplicated)."""
    dataset = read_file(path, key, cfg.data.document_boundary)
    column = "text" if "text" in dataset.column_names and Path(path).suffix.lower() in (".txt", ".text") else cfg.data.text_column
    require_columns(dataset, [column], path, key)
    dataset = dataset.select_columns([column])
    if column != "text":
        dataset = dataset.rename_column(column, "text")
    dataset = dataset.map(lambda b: {"text": [(t or "").strip() for t in b["text"]]}, batched=True,
                          num_proc=cfg.data.preprocessing_num_workers)
    dataset = dataset.filter(lambda b: [bool(t) for t in b["text"]], batched=True,
                             num_proc=cfg.data.preprocessing_num_workers)
    if cfg.data.dedupe:
        seen, keep = set(), []
        for start, batch in enumerate(dataset.iter(batch_size=PACK_BATCH)):
            for offset, text in enumerate(batch["text"]):
                digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
                if digest not in seen:
                    seen.add(digest)
                    keep.append(start * PACK_BATCH + offset)
        dataset = dataset.select(keep)
    if len(dataset) == 0:
        raise LlmkitError(f"{key}: {path} has no non-empty documents")
    return dataset


def _pack(cfg: Config, documents, tokenizer):
    import datasets

    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    separator = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if separator is None:
        raise LlmkitError("tokenizer: needs a separator token (sep_token or eos_token) to mark document ends")
    block = cfg.data.max_seq_length - (start is not None)

    def pack(batch):
        stream = []
        for ids in tokenizer(batch["text"], add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.append(separator)
        head = [] if start is None else [start]
        return {"input_ids": [head + stream[i:i + block] for i in range(0, len(stream), block)]}

    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"))})
    return documents.map(pack, batched=True, batch_size=PACK_BATCH, remove_columns=documents.column_names,
                         features=features, num_proc=cfg.data.preprocessing_num_workers)


def _count_tokens(blocks) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.list_value_length(blocks.data.column("input_ids"))).as_py() or 0)
