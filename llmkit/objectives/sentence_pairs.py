"""Masked LM plus a sentence-pair task on segment pairs [CLS] A [SEP] B [SEP] (data.pairs cuts them):
BERT's next-sentence prediction (`pretrain.objective: mlm+nsp`) and ALBERT's sentence-order
prediction (`mlm+sop`), on a *ForPreTraining model. `infer` fills masks with its masked-LM head."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmkit.errors import LlmkitError
from llmkit.objectives.base import IGNORE_INDEX, ModelKind, language_model_metrics, model_inputs
from llmkit.objectives.masked_lm import MASKED_LM, MaskedLM, MaskedLMLoss, head_losses

PRETRAINING = ModelKind("AutoModelForPreTraining", ("ForPreTraining",), "pretraining (masked-lm + sentence-pair)",
                        "pretrain")


class SentencePairs(MaskedLM):
    """Each row carries its pair label as `next_sentence_label` (nsp: is B what follows A; sop: are A and
    B in order). The loss is BERT's: the mean masked-token loss plus the mean pair loss."""

    model_kind = PRETRAINING
    predict_kind = MASKED_LM

    def wrap(self, model):
        return MaskedLMPairLoss(model, self.section.sparse_prediction)

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        batch = super().collate(rows, example_ids, epoch)
        batch["next_sentence_label"] = torch.tensor(rows["next_sentence_label"])
        return batch

    def loss(self, module, batch):
        """`module` is a MaskedLMPairLoss."""
        return module(labels=batch["labels"], next_sentence_label=batch["next_sentence_label"],
                      **model_inputs(batch)), self.count(batch)

    def eval_outputs(self, module, batch) -> list:
        token_losses, pair_logits = module.outputs(batch["labels"], **model_inputs(batch))
        rows = (batch["labels"] != IGNORE_INDEX).nonzero()[:, 0]
        masked_loss = token_losses.new_zeros(len(pair_logits)).index_add_(0, rows, token_losses).tolist()
        correct = (pair_logits.argmax(-1) == batch["next_sentence_label"]).tolist()
        outputs = [{"masked_lm_loss": loss, "pair_correct": right} for loss, right in zip(masked_loss, correct)]
        if self.pseudo_perplexity:
            outputs = [{**o, **p} for o, p in zip(outputs, self._pseudo_log_likelihoods(module, batch))]
        return outputs

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        """`loss` is the training loss (masked-token mean + pair mean); the perplexity is the masked LM's."""
        masked_lm = language_model_metrics(sum(o["masked_lm_loss"] for o in outputs), count)
        return {**super().metrics(loss_sum, count, outputs), "masked_lm_loss": masked_lm["loss"],
                "perplexity": masked_lm["perplexity"],
                f"{self.pair_task}_accuracy": sum(o["pair_correct"] for o in outputs) / max(len(outputs), 1)}


class NextSentencePrediction(SentencePairs):
    pair_task = "nsp"
    metric_names = (*MaskedLM.metric_names, "masked_lm_loss", "nsp_accuracy")


class SentenceOrderPrediction(SentencePairs):
    pair_task = "sop"
    metric_names = (*MaskedLM.metric_names, "masked_lm_loss", "sop_accuracy")


class MaskedLMPairLoss(MaskedLMLoss):
    """BERT's pretraining loss: masked LM plus a two-way sentence-pair head (NSP or SOP) on the pooled
    [CLS] vector, from a *ForPreTraining model. BERT sums the mean masked-token loss and the mean pair
    loss; the loop divides the sum by the masked-token count, so each pair's loss is weighted by the
    masked tokens per example. The LM head runs on masked rows only, as in MaskedLMLoss."""

    HEADS = (("cls.predictions", "cls.seq_relationship"), ("predictions", "sop_classifier"))  # BERT, ALBERT

    def __init__(self, model, sparse: bool = True):
        torch.nn.Module.__init__(self)
        names = {name for name, _ in model.named_modules()}
        heads = next((pair for pair in self.HEADS if set(pair) <= names), None)
        if heads is None:
            raise LlmkitError(f"pretrain.objective: {type(model).__name__} has no sentence-pair head; "
                              "NSP and SOP train BERT- or ALBERT-style models (model_type bert or albert)")
        self.model, self.sparse, self.heads = model, sparse, heads  # names: the modules stay registered once

    def outputs(self, labels, **inputs):
        """Each masked position's loss, and each example's pair logits."""
        lm_head, pair_head = (self.model.get_submodule(name) for name in self.heads)
        hidden, pooled = self.model.base_model(**inputs)[:2]
        selected = labels != IGNORE_INDEX
        if self.sparse:
            token_losses = head_losses(lm_head, hidden[selected], labels[selected], self.model.config.vocab_size)
        else:
            token_losses = F.cross_entropy(lm_head(hidden)[selected].float(), labels[selected], reduction="none")
        return token_losses, pair_head(pooled).float()

    def token_losses(self, labels, **inputs):
        return self.outputs(labels, **inputs)[0]

    def forward(self, labels, next_sentence_label, **inputs):
        token_losses, pair_logits = self.outputs(labels, **inputs)
        pair_loss = F.cross_entropy(pair_logits, next_sentence_label, reduction="sum")
        return token_losses.sum() + pair_loss * len(token_losses) / len(next_sentence_label)
