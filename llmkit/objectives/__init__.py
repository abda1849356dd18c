"""What is trained, as plug-ins: one module per family, one class per name, and the registries that map
config names to classes. Nothing outside this package asks which objective or task a run has: the
stages, the training loop, evaluation and the data readers only call the protocol in `base`.

    pretrain.objective -> OBJECTIVES     finetune.task -> TASKS     infer.task (untrained) -> USES

Adding a family: one module here with its class (subclassing Objective, Task or Use) and one line below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmkit.objectives.causal_lm import CausalLM
from llmkit.objectives.classification import MultiLabelClassification, Regression, SequenceClassification
from llmkit.objectives.contrastive import Contrastive
from llmkit.objectives.embedding import SentenceEmbedding, ZeroShotClassification
from llmkit.objectives.masked_lm import MaskedLM
from llmkit.objectives.question_answering import QuestionAnswering
from llmkit.objectives.multiple_choice import MultipleChoice
from llmkit.objectives.sentence_pairs import NextSentencePrediction, SentenceOrderPrediction
from llmkit.objectives.seq2seq import Seq2Seq
from llmkit.objectives.span_corruption import SpanCorruption
from llmkit.objectives.token_classification import TokenClassification

if TYPE_CHECKING:
    from llmkit.config import Config
    from llmkit.objectives.base import Family

OBJECTIVES = {
    "mlm": MaskedLM,
    "mlm+nsp": NextSentencePrediction,
    "mlm+sop": SentenceOrderPrediction,
    "clm": CausalLM,
    "contrastive": Contrastive,
    "span_corruption": SpanCorruption,
}
TASKS = {
    "sequence_classification": SequenceClassification,
    "regression": Regression,
    "multi_label_classification": MultiLabelClassification,
    "token_classification": TokenClassification,
    "question_answering": QuestionAnswering,
    "multiple_choice": MultipleChoice,
    "seq2seq": Seq2Seq,
}
USES = {
    "embed": SentenceEmbedding,
    "zero_shot": ZeroShotClassification,
}


def family_of(cfg: Config) -> type[Family]:
    """The class for what `cfg` trains, or for how infer/evaluate use the model (infer.task)."""
    if cfg.infer.task in USES:
        return USES[cfg.infer.task]
    return OBJECTIVES[cfg.pretrain.objective] if cfg.pretrain is not None else TASKS[cfg.finetune.task]
