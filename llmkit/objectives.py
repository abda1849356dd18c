"""What is learnt: each objective turns rows into a batch, a batch into a summed loss, and gathered
evaluation outputs into metrics. The training loop and evaluation never branch on which it is.

    batch = objective.collate(rows, example_ids, epoch)
    loss_sum, count = objective.loss(model, batch)       # the loop divides by the global count
    outputs = objective.eval_outputs(model, batch)       # per-example results, gathered over processes
    metrics = objective.metrics(loss_sum, count, outputs)
"""

from __future__ import annotations

import math

from llmkit.data.batching import pad, pad_inputs

IGNORE_INDEX = -100
PSEUDO_PERPLEXITY_TOKENS = 16384  # tokens per forward when scoring one-mask copies of an example
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9)


def example_generator(seed: int, epoch: int, example_id: int):
    """A torch generator for one example in one epoch: masking does not depend on batch layout,
    process count or where a run resumed."""
    import torch

    return torch.Generator().manual_seed((seed * _MIX[0] + (epoch + 1) * _MIX[1] + example_id) % (1 << 63))


class MaskedLM:
    """BERT's masked-LM: select `mlm_probability` of the tokens (or of the words, with whole_word_mask);
    of the selected tokens 80% -> mask, 10% -> random, 10% kept."""

    head = "masked_lm"

    def __init__(self, tokenizer, section, seed: int, pseudo_perplexity: bool = False):
        if tokenizer.mask_token_id is None:
            from llmkit.errors import LlmkitError

            raise LlmkitError("tokenizer: masked-LM pretraining needs a tokenizer with a mask token")
        self.tokenizer, self.section, self.seed, self.pseudo_perplexity = tokenizer, section, seed, pseudo_perplexity
        self.special_ids = sorted(set(tokenizer.all_special_ids))

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        import torch

        batch = pad_inputs(rows, self.tokenizer.pad_token_id)
        input_ids, labels = batch["input_ids"], batch["input_ids"].clone()
        draws = torch.stack([torch.rand(3, input_ids.shape[1], generator=example_generator(self.seed, epoch, i))
                             for i in example_ids], dim=1)  # [3, batch, length]
        maskable = batch["attention_mask"].bool() & ~torch.isin(input_ids, torch.tensor(self.special_ids))
        chosen = draws[0] < self.section.mlm_probability
        if self.section.whole_word_mask:  # every token follows the draw at the start of its word
            starts = pad(rows["word_starts"], 1).bool()
            positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
            chosen = chosen.gather(1, torch.where(starts, positions, 0).cummax(dim=1).values)
        selected = chosen & maskable
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
        """`model` is a wrappers.MaskedLMLoss: its forward is the summed loss of the masked positions."""
        return model(labels=batch["labels"], **model_inputs(batch)), self.count(batch)

    def eval_outputs(self, model, batch) -> list:
        return self._pseudo_log_likelihoods(model, batch) if self.pseudo_perplexity else []

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        metrics = language_model_metrics(loss_sum, count)
        if self.pseudo_perplexity:
            tokens = sum(o["pll_tokens"] for o in outputs)
            metrics["pseudo_perplexity"] = math.exp(min(sum(o["pll_loss"] for o in outputs) / max(tokens, 1), 700.0))
        return metrics

    def _pseudo_log_likelihoods(self, model, batch) -> list[dict]:
        """Per example: the summed loss of each non-special token masked alone, given all the others
        (its pseudo-log-likelihood, negated), over copies of the example with one [MASK] each."""
        import torch

        original = torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], batch["input_ids"])  # unmasked
        maskable = batch["attention_mask"].bool() & ~torch.isin(original, torch.tensor(self.special_ids,
                                                                                       device=original.device))
        outputs = []
        for row, length in enumerate(batch["attention_mask"].sum(1).tolist()):
            example = {k: v[row, :length] for k, v in model_inputs({**batch, "input_ids": original}).items()}
            positions = maskable[row].nonzero().squeeze(1)
            loss = 0.0
            for chunk in positions.split(max(1, PSEUDO_PERPLEXITY_TOKENS // length)):
                copies = {k: v.expand(len(chunk), -1).clone() for k, v in example.items()}
                labels = torch.full_like(copies["input_ids"], IGNORE_INDEX)
                rows = torch.arange(len(chunk), device=chunk.device)
                labels[rows, chunk] = copies["input_ids"][rows, chunk]
                copies["input_ids"][rows, chunk] = self.tokenizer.mask_token_id
                loss += model.token_losses(labels, **copies).sum().item()
            outputs.append({"pll_loss": loss, "pll_tokens": len(positions)})
        return outputs


class MaskedLMPairs(MaskedLM):
    """Masked LM on segment pairs plus the pair task (`nsp`: is B what follows A; `sop`: are A and B in
    order), whose label each row carries as `next_sentence_label` (data.pairs builds the rows)."""

    head = "pretraining"

    def __init__(self, tokenizer, section, seed: int, pseudo_perplexity: bool = False):
        super().__init__(tokenizer, section, seed, pseudo_perplexity)
        self.task = section.pair_task

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        import torch

        batch = super().collate(rows, example_ids, epoch)
        batch["next_sentence_label"] = torch.tensor(rows["next_sentence_label"])
        return batch

    def loss(self, model, batch):
        """`model` is a wrappers.MaskedLMPairLoss."""
        return model(labels=batch["labels"], next_sentence_label=batch["next_sentence_label"],
                     **model_inputs(batch)), self.count(batch)

    def eval_outputs(self, model, batch) -> list:
        token_losses, pair_logits = model.outputs(batch["labels"], **model_inputs(batch))
        rows = (batch["labels"] != IGNORE_INDEX).nonzero()[:, 0]
        masked_loss = token_losses.new_zeros(len(pair_logits)).index_add_(0, rows, token_losses).tolist()
        correct = (pair_logits.argmax(-1) == batch["next_sentence_label"]).tolist()
        outputs = [{"masked_lm_loss": loss, "pair_correct": right} for loss, right in zip(masked_loss, correct)]
        if self.pseudo_perplexity:
            outputs = [{**o, **p} for o, p in zip(outputs, self._pseudo_log_likelihoods(model, batch))]
        return outputs

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        """`loss` is the training loss (masked-token mean + pair mean); the perplexity is the masked LM's."""
        masked_lm = language_model_metrics(sum(o["masked_lm_loss"] for o in outputs), count)
        return {**super().metrics(loss_sum, count, outputs), "masked_lm_loss": masked_lm["loss"],
                "perplexity": masked_lm["perplexity"],
                f"{self.task}_accuracy": sum(o["pair_correct"] for o in outputs) / max(len(outputs), 1)}


class CausalLM:
    """Next-token prediction: each real token is the target of the position before it."""

    head = "causal_lm"

    def __init__(self, tokenizer):
        self.pad_token_id = pad_token_id(tokenizer)

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        batch = pad_inputs(rows, self.pad_token_id)
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        return batch

    def count(self, batch):
        return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()

    def loss(self, model, batch):
        import torch.nn.functional as F

        logits = model(**model_inputs(batch)).logits[:, :-1]
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"][:, 1:].flatten(),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        return loss, self.count(batch)

    def eval_outputs(self, model, batch) -> list:
        return []

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        return language_model_metrics(loss_sum, count)


class Contrastive:
    """SimCSE: rows hold a sentence's `input_ids` and, when supervised, its positive's
    (`pair_input_ids`) and a hard negative's (`negative_input_ids`); the loss counts one per sentence."""

    head = "encoder"
    VIEWS = ("pair", "negative")

    def __init__(self, tokenizer):
        self.pad_token_id = pad_token_id(tokenizer)

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        batch = pad_inputs({"input_ids": rows["input_ids"]}, self.pad_token_id)
        for view in self.VIEWS:
            if f"{view}_input_ids" in rows:
                padded = pad_inputs({"input_ids": rows[f"{view}_input_ids"]}, self.pad_token_id)
                batch.update({f"{view}_{name}": tensor for name, tensor in padded.items()})
        return batch

    def count(self, batch):
        import torch

        return torch.tensor(len(batch["input_ids"]))

    def loss(self, model, batch):
        """`model` is a wrappers.ContrastiveLoss: its forward is the summed loss of the batch."""
        return model(**batch), self.count(batch)

    def eval_outputs(self, model, batch) -> list:
        return []

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        return {"loss": loss_sum / max(count, 1)}


def language_model_metrics(loss_sum: float, count: int) -> dict:
    """Mean loss per predicted token and its exponential, the perplexity."""
    loss = loss_sum / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "num_predicted_tokens": count}


def pad_token_id(tokenizer) -> int:
    """GPT-2's tokenizer has no pad token; padded positions are masked out, so eos serves."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}


class SequenceClassification:
    """One label per text (or text pair): cross-entropy over the labels."""

    head = "sequence_classification"

    def __init__(self, tokenizer, id2label: dict[int, str]):
        self.tokenizer, self.id2label = tokenizer, id2label

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        import torch

        batch = pad_inputs(rows, self.tokenizer.pad_token_id)
        if "labels" in rows:
            batch["labels"] = torch.tensor(rows["labels"])  # int64 class ids; float32 scores or multi-hot rows
        return batch

    def count(self, batch):
        return batch["input_ids"].new_tensor(len(batch["labels"]))

    def logits(self, model, batch):
        return model(**model_inputs(batch)).logits.float()

    def loss(self, model, batch):
        import torch.nn.functional as F

        return F.cross_entropy(self.logits(model, batch), batch["labels"], reduction="sum"), self.count(batch)

    def eval_outputs(self, model, batch) -> list:
        predictions = self.logits(model, batch).argmax(-1)
        return list(zip(predictions.tolist(), batch["labels"].tolist()))

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        from llmkit.metrics import classification_metrics

        predictions, labels = zip(*outputs) if outputs else ((), ())
        return {"loss": loss_sum / max(count, 1), **classification_metrics(labels, predictions, self.id2label)}


class Regression(SequenceClassification):
    """One number per text (or pair), e.g. STS-B similarity: mean squared error."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer, {0: "score"})

    def loss(self, model, batch):
        prediction = self.logits(model, batch).squeeze(-1)
        return ((prediction - batch["labels"]) ** 2).sum(), self.count(batch)

    def eval_outputs(self, model, batch) -> list:
        return list(zip(self.logits(model, batch).squeeze(-1).tolist(), batch["labels"].tolist()))

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        from llmkit.metrics import regression_metrics

        predictions, labels = zip(*outputs) if outputs else ((), ())
        return {"loss": loss_sum / max(count, 1), **regression_metrics(labels, predictions)}


class MultiLabelClassification(SequenceClassification):
    """Any number of labels per text: one sigmoid per label (binary cross-entropy), `threshold` decides."""

    def __init__(self, tokenizer, id2label: dict[int, str], threshold: float):
        super().__init__(tokenizer, id2label)
        self.threshold = threshold

    def loss(self, model, batch):
        import torch.nn.functional as F

        logits = self.logits(model, batch)
        # Summed over labels and averaged per example, so the loop's per-example normalisation applies.
        loss = F.binary_cross_entropy_with_logits(logits, batch["labels"], reduction="sum") / logits.shape[-1]
        return loss, self.count(batch)

    def eval_outputs(self, model, batch) -> list:
        predicted = (self.logits(model, batch).sigmoid() > self.threshold).int()
        return list(zip(predicted.tolist(), batch["labels"].int().tolist()))

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        from llmkit.metrics import multilabel_metrics

        predictions, labels = zip(*outputs) if outputs else ((), ())
        return {"loss": loss_sum / max(count, 1), **multilabel_metrics(labels, predictions, self.id2label)}


class TokenClassification:
    """A tag per word (NER): cross-entropy over the sub-tokens that carry a word's tag. Predictions
    are read at each word's first sub-token; a word without one (dropped by the tokenizer, or cut
    by truncation) is predicted `O`, so gold sequences are scored whole."""

    head = "token_classification"

    def __init__(self, tokenizer, id2label: dict[int, str]):
        self.tokenizer, self.id2label = tokenizer, id2label
        self.outside = next((i for i, name in id2label.items() if name == "O"), None)

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        from llmkit.data.batching import pad

        batch = pad_inputs(rows, self.tokenizer.pad_token_id)
        if "labels" in rows:
            batch["labels"] = pad(rows["labels"], IGNORE_INDEX)
            batch["word_ids"] = pad(rows["word_ids"], -1)
            batch["word_labels"] = pad(rows["word_labels"], IGNORE_INDEX)
        return batch

    def count(self, batch):
        return (batch["labels"] != IGNORE_INDEX).sum()

    @staticmethod
    def logits(model, batch):
        logits = model(**model_inputs(batch)).logits.float()
        return logits[:, -batch["input_ids"].shape[1]:]  # prompt tuning prepends virtual tokens; drop their logits

    def loss(self, model, batch):
        import torch.nn.functional as F

        logits = self.logits(model, batch)
        loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].view(-1),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
        return loss_sum, self.count(batch)

    def eval_outputs(self, model, batch) -> list:
        predicted = self.logits(model, batch).argmax(-1).tolist()
        outputs = []
        for row, word_ids in enumerate(batch["word_ids"].tolist()):
            gold = [t for t in batch["word_labels"][row].tolist() if t != IGNORE_INDEX]
            words = [self.outside] * len(gold)
            seen = set()
            for position, word in enumerate(word_ids):
                if word >= 0 and word not in seen:
                    seen.add(word)
                    words[word] = predicted[row][position]
            outputs.append(([self.id2label[t] for t in words], [self.id2label[t] for t in gold]))
        return outputs

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        from llmkit.metrics import entity_metrics

        predictions, labels = zip(*outputs) if outputs else ((), ())
        return {"loss": loss_sum / max(count, 1), **entity_metrics(list(labels), list(predictions))}


# finetune.task -> (model head, transformers problem_type)
TASK_HEADS = {
    "sequence_classification": ("sequence_classification", "single_label_classification"),
    "regression": ("sequence_classification", "regression"),
    "multi_label_classification": ("sequence_classification", "multi_label_classification"),
    "token_classification": ("token_classification", None),
}


def finetune_objective(cfg, tokenizer, id2label: dict[int, str]):
    task = cfg.finetune.task
    if task == "regression":
        return Regression(tokenizer)
    if task == "multi_label_classification":
        return MultiLabelClassification(tokenizer, id2label, cfg.finetune.threshold)
    if task == "token_classification":
        return TokenClassification(tokenizer, id2label)
    return SequenceClassification(tokenizer, id2label)
