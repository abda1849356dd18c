"""What is learnt: each objective turns rows into a batch, a batch into a summed loss, and gathered
evaluation outputs into metrics. The training loop and evaluation never branch on which it is.

    batch = objective.collate(rows, example_ids, epoch)
    loss_sum, count = objective.loss(model, batch)       # the loop divides by the global count
    outputs = objective.eval_outputs(model, batch)       # per-example results, gathered over processes
    metrics = objective.metrics(loss_sum, count, outputs)
"""

from __future__ import annotations

import math

from llmkit.data.batching import pad_inputs

IGNORE_INDEX = -100
_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9)


def example_generator(seed: int, epoch: int, example_id: int):
    """A torch generator for one example in one epoch: masking does not depend on batch layout,
    process count or where a run resumed."""
    import torch

    return torch.Generator().manual_seed((seed * _MIX[0] + (epoch + 1) * _MIX[1] + example_id) % (1 << 63))


class MaskedLM:
    """BERT's masked-LM: select `mlm_probability` of the tokens; 80% -> mask, 10% -> random, 10% kept."""

    head = "masked_lm"

    def __init__(self, tokenizer, section, seed: int):
        if tokenizer.mask_token_id is None:
            from llmkit.errors import LlmkitError

            raise LlmkitError("tokenizer: masked-LM pretraining needs a tokenizer with a mask token")
        self.tokenizer, self.section, self.seed = tokenizer, section, seed
        self.special_ids = sorted(set(tokenizer.all_special_ids))

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        import torch

        batch = pad_inputs(rows, self.tokenizer.pad_token_id)
        input_ids, labels = batch["input_ids"], batch["input_ids"].clone()
        draws = torch.stack([torch.rand(3, input_ids.shape[1], generator=example_generator(self.seed, epoch, i))
                             for i in example_ids], dim=1)  # [3, batch, length]
        maskable = batch["attention_mask"].bool() & ~torch.isin(input_ids, torch.tensor(self.special_ids))
        selected = (draws[0] < self.section.mlm_probability) & maskable
        labels[~selected] = IGNORE_INDEX
        to_mask = selected & (draws[1] < self.section.mask_replace_prob)
        random_share = self.section.random_replace_prob / max(1e-12, 1 - self.section.mask_replace_prob)
        to_random = selected & ~to_mask & (draws[2] < random_share)
        input_ids[to_mask] = self.tokenizer.mask_token_id
        random_tokens = (draws[2] / max(random_share, 1e-12) * len(self.tokenizer)).long().clamp_(max=len(self.tokenizer) - 1)
        input_ids[to_random] = random_tokens[to_random]
        batch["labels"] = labels
        return batch

    def count(self, batch):
        return (batch["labels"] != IGNORE_INDEX).sum()

    def loss(self, model, batch):
        import torch.nn.functional as F

        labels = batch["labels"]
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        loss_sum = F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), labels.view(-1),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
        return loss_sum, self.count(batch)

    def eval_outputs(self, model, batch) -> list:
        return []

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        loss = loss_sum / max(count, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "num_predicted_tokens": count}


class SequenceClassification:
    """One label per text (or text pair): cross-entropy over the labels."""

    head = "sequence_classification"

    def __init__(self, tokenizer, id2label: dict[int, str]):
        self.tokenizer, self.id2label = tokenizer, id2label

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        import torch

        batch = pad_inputs(rows, self.tokenizer.pad_token_id)
        if "labels" in rows:
            batch["labels"] = torch.tensor(rows["labels"], dtype=torch.long)
        return batch

    def count(self, batch):
        return batch["labels"].new_tensor(len(batch["labels"]))

    def _logits(self, model, batch):
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()

    def loss(self, model, batch):
        import torch.nn.functional as F

        return F.cross_entropy(self._logits(model, batch), batch["labels"], reduction="sum"), self.count(batch)

    def eval_outputs(self, model, batch) -> list:
        predictions = self._logits(model, batch).argmax(-1)
        return list(zip(predictions.tolist(), batch["labels"].tolist()))

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        from llmkit.metrics import classification_metrics

        predictions, labels = zip(*outputs) if outputs else ((), ())
        return {"loss": loss_sum / max(count, 1), **classification_metrics(labels, predictions, self.id2label)}
