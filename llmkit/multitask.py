"""Multi-task fine-tuning's model: every task's Hugging Face model, all around one shared encoder.

Each task model stays complete (encoder + its head), so it is saved, evaluated and served exactly
like a single-task model; only the training step goes through the top module, by task name.
"""

from __future__ import annotations

import torch

from llmkit.errors import LlmkitError


class MultiTaskModel(torch.nn.Module):
    def __init__(self, models: dict):
        super().__init__()
        self.models = torch.nn.ModuleDict(models)

    def forward(self, task: str, **inputs):
        return self.models[task](**inputs)


def share_encoder(models: dict) -> MultiTaskModel:
    """Give every task model the first one's embeddings and layers. The pooler is not shared: like
    the head it is task-specific (token classification has none, sentence tasks each train their own)."""
    first_name, first = next(iter(models.items()))
    for name, model in models.items():
        if type(model.base_model) is not type(first.base_model):
            raise LlmkitError(f"finetune.tasks.{name}: its encoder ({type(model.base_model).__name__}) differs "
                              f"from task {first_name}'s ({type(first.base_model).__name__})")
        for part, module in first.base_model.named_children():
            if part != "pooler" and hasattr(model.base_model, part):
                setattr(model.base_model, part, module)
    return MultiTaskModel(models)


class TaskForward:
    """Calls the multi-task model for one task. Training goes through the (DDP-wrapped) top module,
    so that gradient synchronisation sees every forward."""

    def __init__(self, model, task: str):
        self.model, self.task = model, task

    def __call__(self, **inputs):
        return self.model(task=self.task, **inputs)
