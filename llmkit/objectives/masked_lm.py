"""Masked language modelling (`pretrain.objective: mlm`), the denoising-autoencoder objective: BERT's
masking of packed blocks, the loss over the masked tokens with the LM head run on those rows only,
masked-token perplexity (and pseudo-perplexity), fill-mask predictions."""

from __future__ import annotations

import math

import numpy as np

from llmkit.data.batching import pad, pad_inputs
from llmkit.errors import LlmkitError
from llmkit.objectives.base import IGNORE_INDEX, ModelKind, language_model_metrics, model_inputs, softmax
from llmkit.objectives.objective import Objective

MASKED_LM = ModelKind("AutoModelForMaskedLM", ("ForMaskedLM", "ForPreTraining"), "masked-lm", "pretrain")
PSEUDO_PERPLEXITY_TOKENS = 16384  # tokens per forward when scoring one-mask copies of an example
_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9)


def example_generator(seed: int, epoch: int, example_id: int):
    """A torch generator for one example in one epoch: masking does not depend on batch layout,
    process count or where a run resumed."""
    import torch

    return torch.Generator().manual_seed((seed * _MIX[0] + (epoch + 1) * _MIX[1] + example_id) % (1 << 63))


class MaskedLM(Objective):
    """BERT's masked-LM: select `mlm_probability` of the tokens (or of the words, with whole_word_mask);
    of the selected tokens 80% -> mask, 10% -> random, 10% kept."""

    model_kind = MASKED_LM
    pipeline_task = "fill-mask"
    onnx_outputs = {"logits": ("batch", "sequence")}
    metric_names = ("loss", "perplexity", "num_predicted_tokens")  # and pseudo_perplexity when thorough

    def __init__(self, cfg, tokenizer, thorough: bool = False):
        if tokenizer.mask_token_id is None:
            raise LlmkitError("tokenizer: masked-LM pretraining needs a tokenizer with a mask token")
        super().__init__(cfg, tokenizer, thorough)
        self.seed, self.pseudo_perplexity = cfg.seed, thorough and cfg.pretrain.pseudo_perplexity
        self.special_ids = sorted(set(tokenizer.all_special_ids))

    def wrap(self, model):
        from llmkit.objectives.losses import MaskedLMLoss

        return MaskedLMLoss(model, self.section.sparse_prediction)

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        import torch

        s = self.section
        batch = pad_inputs(rows, self.tokenizer.pad_token_id)
        input_ids, labels = batch["input_ids"], batch["input_ids"].clone()
        draws = torch.stack([torch.rand(3, input_ids.shape[1], generator=example_generator(self.seed, epoch, i))
                             for i in example_ids], dim=1)  # [3, batch, length]
        maskable = batch["attention_mask"].bool() & ~torch.isin(input_ids, torch.tensor(self.special_ids))
        chosen = draws[0] < s.mlm_probability
        if s.whole_word_mask:  # every token follows the draw at the start of its word
            starts = pad(rows["word_starts"], 1).bool()
            positions = torch.arange(input_ids.shape[1]).expand_as(input_ids)
            chosen = chosen.gather(1, torch.where(starts, positions, 0).cummax(dim=1).values)
        selected = chosen & maskable
        labels[~selected] = IGNORE_INDEX
        to_mask = selected & (draws[1] < s.mask_replace_prob)
        random_share = s.random_replace_prob / max(1e-12, 1 - s.mask_replace_prob)
        to_random = selected & ~to_mask & (draws[2] < random_share)
        input_ids[to_mask] = self.tokenizer.mask_token_id
        vocabulary = len(self.tokenizer)
        random_tokens = (draws[2] / max(random_share, 1e-12) * vocabulary).long().clamp_(max=vocabulary - 1)
        input_ids[to_random] = random_tokens[to_random]
        batch["labels"] = labels
        return batch

    def count(self, batch):
        return (batch["labels"] != IGNORE_INDEX).sum()

    def loss(self, module, batch):
        """`module` is a MaskedLMLoss: its forward is the summed loss of the masked positions."""
        return module(labels=batch["labels"], **model_inputs(batch)), self.count(batch)

    def eval_outputs(self, module, batch) -> list:
        return self._pseudo_log_likelihoods(module, batch) if self.pseudo_perplexity else []

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        metrics = language_model_metrics(loss_sum, count)
        if self.pseudo_perplexity:
            tokens = sum(o["pll_tokens"] for o in outputs)
            metrics["pseudo_perplexity"] = math.exp(min(sum(o["pll_loss"] for o in outputs) / max(tokens, 1), 700.0))
        return metrics

    def _pseudo_log_likelihoods(self, module, batch) -> list[dict]:
        """Per example: the summed loss of each non-special token masked alone, given all the others
        (its pseudo-log-likelihood, negated), over copies of the example with one [MASK] each."""
        import torch

        original = torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], batch["input_ids"])  # unmasked
        specials = torch.tensor(self.special_ids, device=original.device)
        maskable = batch["attention_mask"].bool() & ~torch.isin(original, specials)
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
                loss += module.token_losses(labels, **copies).sum().item()
            outputs.append({"pll_loss": loss, "pll_tokens": len(positions)})
        return outputs

    def logit_positions(self, inputs: dict) -> np.ndarray:
        return inputs["input_ids"] == self.tokenizer.mask_token_id

    def predictions(self, logits, inputs, encoded, ids, examples, run) -> list[dict]:
        """The top-k fillers of each mask token (`logits`: the mask tokens', in row order)."""
        per_row = np.split(logits, np.cumsum(self.logit_positions(inputs).sum(1))[:-1])
        return [self._fill_mask(row_logits, run.top_k, i) for row_logits, i in zip(per_row, ids)]

    def _fill_mask(self, logits: np.ndarray, top_k: int, index: int) -> dict:
        if not len(logits):
            raise LlmkitError(f"--input: row {index + 1} has no {self.tokenizer.mask_token} token to fill")
        predictions = []
        for probabilities in softmax(logits):
            best = np.argpartition(-probabilities, top_k - 1)[:top_k]
            token_ids = best[np.argsort(-probabilities[best], kind="stable")].tolist()
            predictions.append([{"token": self.tokenizer.decode([t]).strip(), "token_id": t,
                                 "score": float(probabilities[t])} for t in token_ids])
        return {"predictions": predictions}
