"""Sentences for contrastive pretraining, one tokenized row each: `input_ids`, and when supervised the
positive's `pair_input_ids` and a hard negative's `negative_input_ids`.

    plain text (.txt, documents per data.document_boundary, e.g. `sentence`) -> unsupervised
    a table with data.text_column + data.text_pair_column (+ data.negative_column) -> supervised
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from llmkit.data.corpus import documents
from llmkit.data.files import first_rows, is_text, read_rows, require_columns
from llmkit.errors import LlmkitError
from llmkit.paths import split_file, split_key

if TYPE_CHECKING:
    from llmkit.config import DataSection


def views(d: DataSection) -> dict[str, str]:
    """Row column -> the data column it is tokenized from."""
    return {"input_ids": d.text_column, **({"pair_input_ids": d.text_pair_column} if d.text_pair_column else {}),
            **({"negative_input_ids": d.negative_column} if d.negative_column else {})}


def sentence_texts(data: DataSection):
    """The training file's texts, streamed (to train a tokenizer on)."""
    return documents(data, split_file(data, "train"), split_key("train"))


def sentence_rows(data: DataSection, split: str, tokenizer, required: bool = True):
    """Tokenized rows of data.<split>_file (None when it is not set and not `required`)."""
    import datasets

    key, path = split_key(split), split_file(data, split)
    if path is None:
        if required:
            raise LlmkitError(f"{key}: required for contrastive pretraining on the {split} split")
        return None
    columns = views(data)
    if is_text(data, path):
        if len(columns) > 1:
            raise LlmkitError(f"{key}: {path} is plain text, but data.text_pair_column / negative_column name "
                              "columns of a pairs file (.jsonl, .csv, .tsv, .parquet)")
        next(documents(data, path, key), None)  # a bad or empty file: one clear line, before datasets wraps it
        stat = os.stat(path)
        rows = datasets.Dataset.from_generator(_rows, gen_kwargs={
            "data": data, "path": path, "key": key, "version": (stat.st_size, stat.st_mtime_ns)})
        columns = {"input_ids": "text"}
    else:
        rows = read_rows(data, path, key)
        require_columns(rows, list(columns.values()), path, key, data)
    wanted = list(columns.values())
    rows = rows.select_columns(wanted).filter(
        lambda batch: [all(str(batch[c][i] or "").strip() for c in wanted) for i in range(len(batch[wanted[0]]))],
        batched=True)
    if len(rows) == 0:
        raise LlmkitError(f"{key}: {path} has no rows with every text column filled ({', '.join(wanted)})")
    rows = first_rows(rows, data.max_train_samples if split == "train" else data.max_eval_samples)

    def tokenize(batch):
        return {view: tokenizer([str(t).strip() for t in batch[column]], truncation=True,
                                max_length=data.max_seq_length)["input_ids"] for view, column in columns.items()}

    return rows.map(tokenize, batched=True, remove_columns=rows.column_names,
                    num_proc=data.preprocessing_num_workers)


def _rows(data: DataSection, path: str, key: str, version):
    yield from ({"text": text} for text in documents(data, path, key))
