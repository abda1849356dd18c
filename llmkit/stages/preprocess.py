"""`llmkit preprocess CONFIG`: build (or find in the cache) the objective's training data, e.g. the packed corpus.

    llmkit preprocess configs/tiny/pretrain.yaml
"""

from __future__ import annotations

import json

from llmkit.config import Config
from llmkit.console import say
from llmkit.objectives import OBJECTIVES


def run(cfg: Config) -> dict:
    info = OBJECTIVES[cfg.pretrain.objective].preprocess(cfg)
    say(json.dumps(info, indent=2))
    return info
