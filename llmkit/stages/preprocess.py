"""`llmkit preprocess CONFIG`: build (or find in the cache) the packed pretraining corpus.

    llmkit preprocess configs/tiny/pretrain.yaml
"""

from __future__ import annotations

import json

from llmkit.config import Config
from llmkit.data.corpus import prepare_corpus
from llmkit.errors import LlmkitError


def run(cfg: Config) -> dict:
    if cfg.pretrain.objective == "contrastive":
        raise LlmkitError("pretrain.objective: contrastive pretraining reads its sentences (or pairs) when it "
                          "starts; there is no packed corpus to preprocess, run `llmkit pretrain`")
    corpus = prepare_corpus(cfg)
    print(json.dumps({"cache": str(corpus.folder), **corpus.info}, indent=2))
    return corpus.info
