"""Read a data file of any supported format into a `datasets.Dataset`, failing with one clear line.

Supported: .txt (a row per line; a corpus's documents per `document_boundary`), .csv, .tsv (unquoted, as GLUE ships them),
.json / .jsonl, .parquet, and a hub dataset name (`NAME` or `NAME:CONFIG`) when online.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
from collections.abc import Iterator
from pathlib import Path

from llmkit.errors import LlmkitError
from llmkit.paths import split_of

TEXT_SUFFIXES = {".txt", ".text"}
SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")
CONLL_SUFFIXES = {".conll", ".bio", ".iob", ".iob2"}
TABLE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def read_table(data, path: str, key: str):
    """read_file with the data section's header / column_names."""
    return read_file(path, key, data.header, data.column_names)


def read_file(path: str, key: str, header: bool = True, column_names: list[str] | None = None):
    """Load `path` (named by config key `key` in messages). Text files get one `text` row per line. A
    .csv / .tsv without a header (`header=False`) has its columns named `column_names`, else 0, 1, ..."""
    import datasets

    suffix = Path(path).suffix.lower()
    if not os.path.exists(path) and not (suffix or os.path.isabs(path) or path.startswith(".")):
        return _read_hub(path, key)
    _check_file(path, key, binary=suffix == ".parquet")
    if suffix in CONLL_SUFFIXES:
        _check_conll(path, key)
        stat = os.stat(path)
        return datasets.Dataset.from_generator(_conll_sentences, gen_kwargs={"path": path, "version": (stat.st_size, stat.st_mtime_ns)})
    if suffix in TEXT_SUFFIXES:
        builder, kwargs = "text", {}
    elif suffix in TABLE_BUILDERS:
        builder, kwargs = TABLE_BUILDERS[suffix], {}
        if suffix == ".tsv":
            # GLUE-style TSVs are not quoted: a '"' is a literal character, never a field delimiter.
            kwargs = {"sep": "\t", "quoting": csv.QUOTE_NONE}
        if builder == "csv" and not header:
            kwargs.update(header=None, **({"column_names": column_names} if column_names else {}))
    else:
        raise LlmkitError(f"{key}: {path}: unsupported file type {suffix or '(none)'}; "
                          "use .txt, .csv, .tsv, .json, .jsonl, .parquet or .conll")
    try:
        dataset = datasets.load_dataset(builder, data_files={"data": path}, split="data", **kwargs)
    except Exception as e:  # datasets wraps parser errors; report the innermost one
        raise LlmkitError(f"{key}: cannot parse {path}: {_root_cause(e)}") from None
    if len(dataset) == 0:
        raise LlmkitError(f"{key}: {path} has no rows")
    return dataset


def iter_documents(path: str, key: str, data) -> Iterator[str]:
    """A corpus file's raw documents, streamed: a text file line by line as data.document_boundary says
    (whole only when a document is the `file`), a table batch by batch from its memory-mapped Arrow copy."""
    if Path(path).suffix.lower() in TEXT_SUFFIXES and os.path.exists(path):
        _check_file(path, key, binary=False)
        yield from _text_documents(path, data.document_boundary)
        return
    dataset = read_table(data, path, key)
    require_columns(dataset, [data.text_column], path, key)
    yield from iter_texts(dataset, [data.text_column])


def require_columns(dataset, columns: list[str], path: str, key: str) -> None:
    """Every needed column is there; otherwise name the missing one and what the file has."""
    import difflib

    have = list(dataset.column_names)
    for column in columns:
        if column in have:
            continue
        hint = ""
        if len(have) == 1 and any(sep in have[0] for sep in ",\t;|"):
            hint = " (the header was read as a single column: is the delimiter right for the file type?)"
        elif match := difflib.get_close_matches(column, have, n=1):
            hint = f" (did you mean {match[0]!r}?)"
        elif any(_looks_like_data(name) for name in have):
            hint = (" (its first row looks like data, not column names: for a file without a header set "
                    "data.header: false, and name the columns with data.column_names or by index)")
        raise LlmkitError(f"{key}: {path} has no column {column!r}{hint}; its columns are {have}")


def _looks_like_data(name: str) -> bool:
    """A header cell that is a number, a sentence, or pandas' name for an empty one."""
    try:
        float(name)
        return True
    except ValueError:
        return name.startswith("Unnamed: ") or len(name.split()) > 3 or len(name) > 40


def first_rows(dataset, limit: int | None):
    """The first `limit` rows (all when None), as Hugging Face's example scripts take max_*_samples."""
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


def iter_texts(dataset, columns: list[str], batch_size: int = 1000):
    """Stream the strings of some columns, batch by batch (never the whole column in memory)."""
    for batch in dataset.iter(batch_size=batch_size):
        for column in columns:
            yield from (t for t in batch[column] if t)


def _conll_lines(path: str):
    """(line number, fields) of each non-blank line, and (line number, None) at sentence breaks:
    blank lines and whitespace-only ones (WNUT-17 separates most sentences with a lone tab)."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            yield number, (line.split() if line.strip() else None)


def _check_conll(path: str, key: str) -> None:
    """Every token line has the same number of fields (at least a token and a tag)."""
    width = None
    for number, fields in _conll_lines(path):
        if fields is None or fields[0] == "-DOCSTART-":
            continue
        width = width or len(fields)
        if len(fields) < 2 or len(fields) != width:
            raise LlmkitError(f"{key}: {path} line {number}: expected {max(width, 2)} fields (token ... tag), "
                              f"found {len(fields)}: {' '.join(fields)!r}")


def _conll_sentences(path: str, version):
    """Sentences as {tokens, tags}: the first field is the token, the last the tag."""
    tokens, tags = [], []
    for _, fields in _conll_lines(path):
        if fields is None or fields[0] == "-DOCSTART-":
            if tokens:
                yield {"tokens": tokens, "tags": tags}
                tokens, tags = [], []
            continue
        tokens.append(fields[0])
        tags.append(fields[-1])
    if tokens:
        yield {"tokens": tokens, "tags": tags}


def _text_documents(path: str, document_boundary: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        if document_boundary == "file":
            yield f.read()
        elif document_boundary == "line":
            yield from f
        elif document_boundary == "sentence":
            for line in f:
                yield from sentences(line)
        else:  # blocks of lines between blank lines; datasets' own paragraph mode misses blank lines
            block = []  # holding spaces (all of WikiText's)
            for line in f:
                if line.strip():
                    block.append(line.rstrip("\n"))
                elif block:
                    yield "\n".join(block)
                    block = []
            if block:
                yield "\n".join(block)


def sentences(text: str) -> list[str]:
    """The text's lines, each split after . ! or ? (and a closing quote or bracket) before a capital or digit."""
    return [s for line in text.splitlines() for s in SENTENCE_END.split(line.strip()) if s]


def _check_file(path: str, key: str, binary: bool) -> None:
    """The file exists, is a readable non-empty file, and (unless binary) UTF-8 text."""
    if not os.path.exists(path):
        raise LlmkitError(f"{key}: file not found: {path}")
    if os.path.isdir(path):
        raise LlmkitError(f"{key}: {path} is a folder, expected a data file")
    if not os.access(path, os.R_OK):
        raise LlmkitError(f"{key}: cannot read {path} (permission denied)")
    if os.path.getsize(path) == 0:
        raise LlmkitError(f"{key}: {path} is empty")
    if not binary:
        _check_utf8(path, key)


def _check_utf8(path: str, key: str) -> None:
    """Fail on the first non-UTF-8 byte with its line number; streamed in 1 MiB chunks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines_before = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                line = lines_before + chunk.count(b"\n", 0, e.start) + 1
                raise LlmkitError(f"{key}: {path} line {line}: not UTF-8 text "
                                  f"(byte {chunk[e.start:e.start + 1]!r})") from None
            lines_before += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise LlmkitError(f"{key}: {path}: not UTF-8 text (truncated character at the end)") from None


def _read_hub(name: str, key: str):
    import datasets

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise LlmkitError(f"{key}: file not found: {name} (and HF_HUB_OFFLINE=1 rules out a hub dataset of that name)")
    dataset_name, _, config = name.partition(":")
    split = split_of(key)
    try:
        return datasets.load_dataset(dataset_name, config or None, split=split)
    except Exception as e:
        raise LlmkitError(f"{key}: {name} is neither a local file nor a loadable hub dataset: {_root_cause(e)}") from None


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}".strip()
