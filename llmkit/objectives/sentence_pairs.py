"""Masked LM plus a sentence-pair task on segment pairs [CLS] A [SEP] B [SEP] (data.pairs cuts them):
BERT's next-sentence prediction (`pretrain.objective: mlm+nsp`) and ALBERT's sentence-order
prediction (`mlm+sop`), on a *ForPreTraining model. `infer` fills masks with its masked-LM head."""

from __future__ import annotations

from llmkit.objectives.base import IGNORE_INDEX, ModelKind, language_model_metrics, model_inputs
from llmkit.objectives.masked_lm import MASKED_LM, MaskedLM

PRETRAINING = ModelKind("AutoModelForPreTraining", ("ForPreTraining",), "pretraining (masked-lm + sentence-pair)",
                        "pretrain")


class SentencePairs(MaskedLM):
    """Each row carries its pair label as `next_sentence_label` (nsp: is B what follows A; sop: are A and
    B in order). The loss is BERT's: the mean masked-token loss plus the mean pair loss."""

    model_kind = PRETRAINING
    predict_kind = MASKED_LM

    def wrap(self, model):
        from llmkit.objectives.losses import MaskedLMPairLoss

        return MaskedLMPairLoss(model, self.section.sparse_prediction)

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        import torch

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
