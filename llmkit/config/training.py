"""The config sections of what is trained and how: pretrain, finetune (LoRA, prompts, several tasks), train."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from llmkit.config.sections import DataSection, Section, Strategy, no_as_string
from llmkit.config.finetune_options import LoraSection, PromptSection, QuestionAnsweringSection, Seq2SeqSection
from llmkit.objectives import OBJECTIVES, TASKS


class PretrainSection(Section):
    objective: Literal[tuple(OBJECTIVES)] = "mlm"
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
    a hard negative). The pooling is saved with the model, as sentence-transformers saves it.
    Or `span_corruption`, T5's denoising objective for encoder-decoders (AutoModelForSeq2SeqLM): spans of
    the packed blocks (noise_density, mean_noise_span_length) become sentinel tokens in the input, and the
    decoder writes each sentinel followed by its span."""

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

    noise_density: float = Field(0.15, gt=0, lt=1)
    """Span corruption: share of each block's tokens that are noise, dropped from the encoder input
    (one sentinel per span in their place) and predicted by the decoder (T5: 0.15)."""

    mean_noise_span_length: float = Field(3.0, ge=1)
    """Span corruption: mean length in tokens of a noise span (T5: 3). Blocks are longer than
    data.max_seq_length by what the spans save, so each corrupted input is max_seq_length tokens."""

    @model_validator(mode="after")
    def _consistent(self) -> PretrainSection:
        if self.mask_replace_prob + self.random_replace_prob > 1:
            raise ValueError("mask_replace_prob + random_replace_prob must be at most 1")
        if self.pseudo_perplexity and not self.objective.startswith("mlm"):
            raise ValueError(f"pseudo_perplexity is for masked-LM objectives, not {self.objective}")
        return self


TaskName = Literal[tuple(TASKS)]


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
    `regression` (one number, MSE), `multi_label_classification` (any number of labels, binary cross-entropy),
    `token_classification` (a tag per word, e.g. NER), `question_answering` (an answer span of a context,
    SQuAD-style), `multiple_choice` (one of N choices, SWAG-style) or `seq2seq` (a generated text:
    translation, summarization; T5, BART, Marian or a BERT2BERT encoder-decoder)."""

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

    question_answering: QuestionAnsweringSection = QuestionAnsweringSection()
    """Question answering: how start/end logits become answers."""

    merge_adapter: bool = False
    """lora: also write the adapter merged into the base weights at output_dir/merged, a plain
    transformers model. (Prompt and prefix adapters cannot be merged.)"""

    seq2seq: Seq2SeqSection = Seq2SeqSection()
    """Settings of sequence-to-sequence tasks: label smoothing, target length, generation."""

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


def _tracker_list(value):
    """`none` (or nothing) is no tracker; one name is a list of one."""
    if value is None or value == "none" or value == ["none"]:
        return []
    return [value] if isinstance(value, str) else value


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

    mixed_precision: Annotated[Literal["no", "fp16", "bf16"], BeforeValidator(no_as_string)] = "no"
    """Accelerate's mixed precision: `bf16` runs autocast on CPUs with bf16 support and recent GPUs."""

    fast_dropout: bool = True
    """On the CPU, draw dropout masks from 32-bit random integers instead of torch's `bernoulli_`
    (element by element on CPUs without MKL's generator, e.g. AMD), and run training attention as
    matmuls in the autocast precision instead of SDPA's fp32 fallback (with dropout) or its flash
    kernel, whose backward is slow on short sequences (without): the same Bernoulli masks (p within
    1.2e-10), a quarter off a small BERT's pretraining step, a fifth off a small BART's. No effect
    on GPUs."""

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
    data position and logs continue exactly where the checkpoint left them. One line, the verdict, says
    how: `exact`; `continues, not bitwise` (another process count or library version, or changed training
    settings: the learning rate, schedule, steps and batch are this config's, re-planned from the
    checkpoint's step); or `refused` (exit 2, output_dir untouched) when the model, tokenizer, data or
    objective changed."""

    resume_force: bool = False
    """Resume even when the verdict refuses it (another model shape, tokenizer, data or objective): the
    checkpoint's weights go on training under this config, and the verdict says it was forced."""

    metric_for_best_model: str | None = None
    """Evaluation metric that ranks checkpoints (`loss`, `accuracy`, `f1`, ...; an `eval_` prefix is
    allowed). The best checkpoint is never removed by save_total_limit. Default: loss."""

    greater_is_better: bool | None = None
    """Whether a higher metric_for_best_model is better. Default: false for losses, errors (mse, mae) and
    perplexity, else true."""

    load_best_model_at_end: bool = False
    """Make the final model in output_dir the best checkpoint's (by metric_for_best_model), and its
    eval_results.json that checkpoint's evaluation. Needs save_strategy equal to eval_strategy (and, for
    `steps`, save_steps equal to eval_steps), so that every evaluated step has a checkpoint."""

    early_stopping_patience: int | None = Field(None, ge=1)
    """Stop after this many evaluations in a row without metric_for_best_model improving on its best by
    more than early_stopping_threshold; the run then evaluates and saves as a finished one
    (trainer_state.json: `stopped_by: early_stopping`). Off when unset."""

    early_stopping_threshold: float = Field(0.0, ge=0)
    """How much metric_for_best_model must improve on its best to count as an improvement."""

    report_to: Annotated[list[Literal["tensorboard", "mlflow", "wandb"]], BeforeValidator(_tracker_list)] = []
    """Experiment trackers that get the config and every metrics.jsonl record (TrainingArguments' name):
    a list of `tensorboard` (event files in output_dir/runs/), `mlflow` (sqlite:///output_dir/mlflow.db
    unless MLFLOW_TRACKING_URI is set) and `wandb` (offline unless logged in), or `none`. Each is an
    optional extra: `pip install 'llmkit[tensorboard]'`. A resumed run continues the same tracker run."""

    on_nonfinite_loss: Literal["stop", "skip"] = "stop"
    """A NaN/inf loss or gradient: `stop` the run (exit code 3, weights never updated with it) or `skip`
    that step's update and go on."""

    overwrite_output_dir: bool = False
    """Allow a new run in an output_dir that already holds checkpoints or a trained model."""

    use_cpu: bool = False
    """Train on the CPU even where a GPU is present. (Without a GPU the CPU is used anyway, with real
    multi-process DDP over gloo under torchrun.)"""

    # Field checks, not whole-section ones: they are reported together with every other problem.
    @field_validator("max_steps")
    @classmethod
    def _max_steps(cls, steps: int) -> int:
        if steps == 0 or steps < -1:
            raise ValueError("must be a positive number of steps, or -1 to use num_train_epochs")
        return steps

    @field_validator("max_time")
    @classmethod
    def _max_time(cls, text: str | None) -> str | None:
        if text is not None:
            duration_seconds(text)
        return text

    @field_validator("report_to")
    @classmethod
    def _trackers(cls, names: list[str]) -> list[str]:
        from llmkit.trackers import missing_trackers

        absent = missing_trackers(names)
        if absent:
            raise ValueError(f"{', '.join(absent)} is not installed: pip install "
                             + " ".join(f"'llmkit[{name}]'" for name in absent))
        return names

    @model_validator(mode="after")
    def _best_model(self) -> TrainSection:
        evaluates = self.eval_strategy != "no"
        if self.early_stopping_patience is not None and not evaluates:
            raise ValueError("early_stopping_patience counts evaluations: set eval_strategy to steps or epoch")
        if self.load_best_model_at_end:
            if not evaluates or self.save_strategy != self.eval_strategy:
                raise ValueError("load_best_model_at_end needs save_strategy equal to eval_strategy (both steps or "
                                 f"both epoch; they are {self.save_strategy} and {self.eval_strategy})")
            if self.save_strategy == "steps" and self.save_steps != self.eval_steps:
                raise ValueError(f"load_best_model_at_end needs save_steps ({self.save_steps}) equal to eval_steps "
                                 f"({self.eval_steps}): every evaluated step then has a checkpoint to load")
        return self

    @property
    def max_seconds(self) -> float | None:
        """max_time in seconds."""
        return None if self.max_time is None else duration_seconds(self.max_time)


def duration_seconds(text: str) -> float:
    """`30m`, `2h`, `1h30m`, `90s` or a bare number of seconds, in seconds."""
    match = re.fullmatch(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s?)?", text.strip())
    seconds = sum(float(v) * unit for v, unit in zip(match.groups(), (3600, 60, 1)) if v) if match else 0
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration like 30m, 2h, 1h30m or 90s")
    return seconds


