"""What pretraining objectives share: a packed corpus of the training text, read from the cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from llmkit.data.corpus import CorpusLayout, evaluation_blocks, prepare_corpus
from llmkit.objectives.base import Family, ModelKind, load_trained_model

if TYPE_CHECKING:
    from llmkit.config import Config, PretrainSection


class Objective(Family):
    """A pretraining objective. `thorough`: `llmkit evaluate` asks for every metric, costly ones too."""

    causal: ClassVar[bool] = False  # blocks are one stream ended by eos, without a [CLS]
    pair_task: ClassVar[str | None] = None  # examples are segment pairs for this sentence-pair task

    def __init__(self, cfg: Config, tokenizer, thorough: bool = False):
        self.cfg, self.section, self.tokenizer, self.thorough = cfg, cfg.pretrain, tokenizer, thorough

    @classmethod
    def layout(cls, section: PretrainSection) -> CorpusLayout:
        return CorpusLayout(causal=cls.causal, pair_task=cls.pair_task, whole_words=section.whole_word_mask)

    @classmethod
    def training_data(cls, cfg: Config):
        """(tokenizer, training rows, validation rows or None), built once and then read from the cache."""
        corpus = prepare_corpus(cfg, cls.layout(cfg.pretrain))
        return corpus.tokenizer, corpus.train, corpus.validation

    @classmethod
    def preprocess(cls, cfg: Config) -> dict:
        """`llmkit preprocess`: build the cached training data now; what it holds."""
        corpus = prepare_corpus(cfg, cls.layout(cfg.pretrain))
        return {"cache": str(corpus.folder), **corpus.info}

    def evaluation_data(self, split: str, task: str | None = None):
        return evaluation_blocks(self.cfg, split, self.tokenizer, self.layout(self.section))

    @classmethod
    def trained(cls, cfg: Config, source: str, tokenizer, kind: ModelKind, thorough: bool = False):
        return cls(cfg, tokenizer, thorough), load_trained_model(cfg, source, kind)

    @classmethod
    def with_model_config(cls, cfg: Config, tokenizer, config: dict):
        return cls(cfg, tokenizer)
