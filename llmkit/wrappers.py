"""Modules the training loop runs in place of a bare Hugging Face model, each saving as plain HF models.

- MaskedLMLoss: a masked LM whose forward is its summed loss, with the LM head run on masked rows only.
- MaskedLMPairLoss: the same plus next-sentence / sentence-order prediction (BERT's pretraining loss).
- MultiTaskModel: every task's model around one shared encoder, called by task name.
- ContrastiveLoss: an encoder whose forward is SimCSE's loss, saved with its pooling.

Training goes through these modules' forward, so a DDP wrapper sees every forward; `hf_models()`
says which Hugging Face models to save, and under which state-dict prefix they sit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmkit.errors import LlmkitError
from llmkit.objectives import IGNORE_INDEX, CausalLM, Contrastive, MaskedLM, MaskedLMPairs

LM_HEADS = ("cls", "lm_head")  # the LM head's attribute in BERT- and RoBERTa-style *ForMaskedLM models
CHUNK_BYTES = 16 << 20


def head_losses(head, hidden, labels, vocab_size: int):
    """Cross-entropy of `head(hidden)` row by row, a chunk of rows at a time. The fp32 logits of every
    masked row at once (614 x 30,522 for a 32 x 128 BERT batch: 75 MB) are mapped fresh by glibc and
    page-faulted in on every step; chunks of at most 16 MB are reused from the heap."""
    rows = max(1, CHUNK_BYTES // (4 * vocab_size))
    return torch.cat([F.cross_entropy(head(h).float(), y, reduction="none")
                      for h, y in zip(hidden.split(rows), labels.split(rows))])


class MaskedLMLoss(torch.nn.Module):
    """Summed cross-entropy over the masked positions. With `sparse`, the encoder runs on every token
    but the LM head (transform + vocabulary projection) only on the ~15% of rows that carry a label,
    as MosaicBERT and ModernBERT do: the vocabulary matmul is then no longer the largest one. The loss
    is the same as the dense head's. Architectures without a known head attribute run dense."""

    def __init__(self, model, sparse: bool = True):
        super().__init__()
        self.model = model
        self.head = next((name for name in LM_HEADS if hasattr(model, name)), None) if sparse else None

    def token_losses(self, labels, **inputs):
        """The loss of each masked position, in row-major order."""
        selected = labels != IGNORE_INDEX
        if self.head is None:
            return F.cross_entropy(self.model(**inputs).logits[selected].float(), labels[selected], reduction="none")
        hidden = self.model.base_model(**inputs)[0]
        return head_losses(getattr(self.model, self.head), hidden[selected], labels[selected],
                           self.model.config.vocab_size)

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


PRETRAIN_HEADS = {"mlm": "masked_lm", "mlm+nsp": "pretraining", "mlm+sop": "pretraining", "clm": "causal_lm",
                  "contrastive": "encoder"}


def language_model(cfg, model, tokenizer, pseudo_perplexity: bool = False):
    """The module pretraining runs around the HF model, and its objective (evaluation may ask the
    masked-LM objectives for the pseudo-perplexity too)."""
    p = cfg.pretrain
    if p.objective == "clm":
        return model, CausalLM(tokenizer)
    if p.objective == "contrastive":
        return ContrastiveLoss(model, p.pooling, p.temperature), Contrastive(tokenizer)
    if p.objective == "mlm":
        return MaskedLMLoss(model, p.sparse_prediction), MaskedLM(tokenizer, p, cfg.seed, pseudo_perplexity)
    return MaskedLMPairLoss(model, p.sparse_prediction), MaskedLMPairs(tokenizer, p, cfg.seed, pseudo_perplexity)
