"""The torch modules objectives wrap a model in to train it (Family.wrap). They live apart from the
objectives so that `import llmkit.objectives` stays free of torch: ONNX Runtime's `infer` never loads it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmkit.errors import LlmkitError
from llmkit.objectives.base import IGNORE_INDEX

LM_HEADS = ("cls", "lm_head")  # the LM head's attribute in BERT- and RoBERTa-style *ForMaskedLM models


class MaskedLMLoss(torch.nn.Module):
    """Summed cross-entropy over the masked positions. With `sparse`, the encoder runs on every token
    but the LM head (transform + vocabulary projection) only on the ~15% of rows that carry a label,
    as MosaicBERT and ModernBERT do: the vocabulary matmul is then no longer the largest one. The loss
    is the same as the dense head's. Architectures without a known head attribute run dense.
    Training goes through this forward, so a DDP wrapper sees it; `hf_models()` says what to save."""

    def __init__(self, model, sparse: bool = True):
        super().__init__()
        self.model = model
        self.head = next((name for name in LM_HEADS if hasattr(model, name)), None) if sparse else None

    def token_losses(self, labels, **inputs):
        """The loss of each masked position, in row-major order."""
        selected = labels != IGNORE_INDEX
        if self.head is None:
            logits = self.model(**inputs).logits[selected]
        else:
            logits = getattr(self.model, self.head)(self.model.base_model(**inputs)[0][selected])
        return F.cross_entropy(logits.float(), labels[selected], reduction="none")

    def forward(self, labels, **inputs):
        return self.token_losses(labels, **inputs).sum()

    def hf_models(self) -> dict:
        return {"": ("model.", self.model)}


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
        logits = lm_head(hidden[selected]) if self.sparse else lm_head(hidden)[selected]
        token_losses = F.cross_entropy(logits.float(), labels[selected], reduction="none")
        return token_losses, pair_head(pooled).float()

    def token_losses(self, labels, **inputs):
        return self.outputs(labels, **inputs)[0]

    def forward(self, labels, next_sentence_label, **inputs):
        token_losses, pair_logits = self.outputs(labels, **inputs)
        pair_loss = F.cross_entropy(pair_logits, next_sentence_label, reduction="sum")
        return token_losses.sum() + pair_loss * len(token_losses) / len(next_sentence_label)


class ContrastiveLoss(torch.nn.Module):
    """SimCSE's loss, summed over the batch: each sentence's embedding must be closer (cosine / temperature,
    softmax over the batch) to its own positive than to the other sentences' positives and to every hard
    negative. Unsupervised, the positive is the sentence itself encoded again: dropout makes the difference.
    Saved as the plain encoder plus its pooling (sentence-transformers' 1_Pooling/config.json)."""

    def __init__(self, model, pooling: str, temperature: float):
        super().__init__()
        self.model, self.pooling, self.temperature = model, pooling, temperature

    def embed(self, input_ids, attention_mask):
        from llmkit.embeddings import pool

        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden.float(), attention_mask, self.pooling, normalize=True)

    def forward(self, input_ids, attention_mask, pair_input_ids=None, pair_attention_mask=None,
                negative_input_ids=None, negative_attention_mask=None):
        if pair_input_ids is None:  # one forward over both copies: two independent dropout masks
            anchors, positives = self.embed(torch.cat([input_ids, input_ids]),
                                            torch.cat([attention_mask, attention_mask])).chunk(2)
        else:
            anchors, positives = self.embed(input_ids, attention_mask), self.embed(pair_input_ids, pair_attention_mask)
        candidates = [positives]
        if negative_input_ids is not None:
            candidates.append(self.embed(negative_input_ids, negative_attention_mask))
        scores = anchors @ torch.cat(candidates).T / self.temperature
        return F.cross_entropy(scores, torch.arange(len(anchors), device=scores.device), reduction="sum")

    def hf_models(self) -> dict:
        return {"": ("model.", self.model)}

    def save_extras(self, folder) -> None:
        from llmkit.embeddings import save_pooling

        save_pooling(folder, self.pooling, self.model.config.hidden_size)
