"""Several fine-tuning tasks on one shared encoder (finetune.tasks): every task's model around the first
one's embeddings and layers, called by task name. Training goes through the top module's forward, so a
DDP wrapper sees every forward; `hf_models()` saves each task's model as a complete Hugging Face model."""

from __future__ import annotations

import torch

from llmkit.errors import LlmkitError


class MultiTaskModel(torch.nn.Module):
    def __init__(self, models: dict):
        super().__init__()
        self.models = torch.nn.ModuleDict(models)

    def forward(self, task: str, **inputs):
        return self.models[task](**inputs)

    def hf_models(self) -> dict:
        return {name: (f"models.{name}.", model) for name, model in self.models.items()}


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
