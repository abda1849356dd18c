"""The nested option sections of `finetune:`: a method's (finetune.lora, finetune.prompt) and a task's
(finetune.question_answering, finetune.seq2seq)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmkit.config.sections import Section


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


class QuestionAnsweringSection(Section):
    max_answer_length: int = Field(30, ge=1)
    """Longest answer predicted, in tokens."""

    n_best_size: int = Field(20, ge=1)
    """Start and end tokens tried per window, and answers kept per question to score."""

    version_2_with_negative: bool = False
    """SQuAD v2: a question may have no answer (an empty answers list); the model predicts "" when CLS's
    score beats the best span's by more than null_score_diff_threshold."""

    null_score_diff_threshold: float = 0.0
    """SQuAD v2: how much the null score must beat the best span's score before "" is predicted."""


class Seq2SeqSection(Section):
    label_smoothing_factor: float = Field(0.0, ge=0, lt=1)
    """Share of each target token's probability spread over the vocabulary (0: plain cross-entropy; 0.1 as
    in the Transformer paper)."""

    max_target_length: int = Field(128, ge=2)
    """Tokens per training target: longer references are truncated."""

    source_prefix: str = ""
    """Put before every source, e.g. `"translate English to German: "` for a T5 trained with task prefixes."""

    num_beams: int = Field(1, ge=1)
    """Generation (evaluation and infer): 1 is greedy search, more is beam search with this many beams."""

    max_new_tokens: int = Field(64, ge=1)
    """Generation: the most tokens written per output."""

    length_penalty: float = 1.0
    """Beam search: scores are divided by length**length_penalty; above 1 favours longer outputs."""

    generate_during_training: bool = True
    """Evaluations during training generate and score BLEU, chrF and ROUGE (and the best model can be chosen
    by them). Generation costs far more than the loss (a forward per output token), so on a large validation
    set turn it off, or cap data.max_eval_samples: evaluations then report the loss only. `llmkit evaluate`
    always generates."""
