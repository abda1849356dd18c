"""Sentence embeddings and zero-shot classification, with no training (config section `infer:`).

    embed:       texts --encoder--> token vectors --pool (mean of the real tokens | first token)--> unit vectors
    similarity:  a text's label = the label whose description's embedding has the highest cosine with it
    cloze:       "{text} It was [MASK]." --masked LM--> the label whose verbalizer word scores best at the mask

Texts run in length-sorted batches (little padding) and come back in input order.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmkit.config import Config, InferSection, resolve_path
from llmkit.errors import LlmkitError

POOLING_FILE = Path("1_Pooling") / "config.json"  # where sentence-transformers keeps a model's pooling


def pooling_of(source: str, setting: str) -> str:
    """`mean` or `cls`: the setting, or for `auto` the pooling saved with the model (else mean)."""
    if setting != "auto":
        return setting
    saved = Path(resolve_path(source)) / POOLING_FILE
    if saved.exists():
        modes = json.loads(saved.read_text())
        if modes.get("pooling_mode_cls_token"):
            return "cls"
    return "mean"


def save_pooling(folder: Path, pooling: str, hidden_size: int) -> None:
    """Write the pooling as sentence-transformers does, so that it (and `pooling: auto`) finds it."""
    (folder / POOLING_FILE).parent.mkdir(parents=True, exist_ok=True)
    (folder / POOLING_FILE).write_text(json.dumps({
        "word_embedding_dimension": hidden_size, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}], indent=2))


def pool(hidden, attention_mask, pooling: str, normalize: bool):
    """[batch, length, hidden] token vectors -> [batch, hidden] sentence vectors."""
    import torch

    if pooling == "cls":
        vectors = hidden[:, 0]
    else:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(vectors, dim=-1) if normalize else vectors


def in_length_order(texts: list[str], batch_size: int, run) -> list:
    """`run(batch_texts)` -> one row per text, over length-sorted batches; rows back in input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    rows: list = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        ids = order[start:start + batch_size]
        for i, row in zip(ids, run([texts[i] for i in ids])):
            rows[i] = row
    return rows


def load_encoder(source: str, accelerator):
    from transformers import AutoModel

    from llmkit.modeling import require_model

    return AutoModel.from_pretrained(require_model(source)).to(accelerator.device).eval()


def embed_texts(cfg: Config, source: str, tokenizer, texts: list[str], accelerator, batch_size: int):
    """Embeddings of `texts` by the model at `source`, pooled as infer.pooling says."""
    return embed(load_encoder(source, accelerator), tokenizer, texts, cfg.infer, pooling_of(source, cfg.infer.pooling),
                 cfg.data.max_seq_length, batch_size, accelerator)


def embed(model, tokenizer, texts: list[str], section: InferSection, pooling: str, max_length: int,
          batch_size: int, accelerator):
    """A [len(texts), hidden] float tensor of sentence embeddings from an encoder (AutoModel)."""
    import torch

    def run(batch):
        encoded = tokenizer(batch, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        encoded = {k: v.to(accelerator.device) for k, v in encoded.items()}
        hidden = model(**encoded).last_hidden_state
        return pool(hidden.float(), encoded["attention_mask"], pooling, section.normalize).cpu()

    with torch.inference_mode(), accelerator.autocast():
        return torch.stack(in_length_order(texts, batch_size, run))


class ZeroShot:
    """Scores of each of `infer.labels` for texts, by description similarity or by a cloze prompt."""

    def __init__(self, cfg: Config, source: str, tokenizer, accelerator, batch_size: int):
        from llmkit.modeling import load_trained

        self.cfg, self.section, self.tokenizer = cfg, cfg.infer, tokenizer
        self.accelerator, self.batch_size = accelerator, batch_size
        self.names = list(self.section.labels)
        if self.section.zero_shot_method == "similarity":
            self.model = load_encoder(source, accelerator)
            self.pooling = pooling_of(source, self.section.pooling)
            self.label_vectors = self._embed(list(self.section.labels.values()))
        else:
            if tokenizer.mask_token is None:
                raise LlmkitError(f"infer.zero_shot_method: cloze needs a masked LM; {source} has no mask token")
            self.model = load_trained(source, "masked_lm").to(accelerator.device).eval()
            self.word_ids = [self._word_id(name, word) for name, word in self.section.labels.items()]

    def _embed(self, texts: list[str]):
        return embed(self.model, self.tokenizer, texts, self.section, self.pooling,
                     self.cfg.data.max_seq_length, self.batch_size, self.accelerator)

    def _word_id(self, name: str, word: str) -> int:
        """The verbalizer word as one token (a leading space first, as byte-level BPE marks word starts)."""
        for candidate in (" " + word.strip(), word.strip()):
            ids = self.tokenizer(candidate, add_special_tokens=False)["input_ids"]
            if len(ids) == 1:
                return ids[0]
        pieces = self.tokenizer.tokenize(word.strip())
        raise LlmkitError(f"infer.labels.{name}: {word!r} is {len(pieces)} tokens for this tokenizer ({pieces}); "
                          "a cloze verbalizer must be a single token, pick another word")

    def scores(self, texts: list[str]):
        """[len(texts), labels]: cosine similarities, or the label words' probabilities (normalised over them)."""
        import torch

        if self.section.zero_shot_method == "similarity":
            return self._embed(texts) @ self.label_vectors.T
        prompts = [self.section.template.replace("[MASK]", self.tokenizer.mask_token).replace("{text}", t) for t in texts]

        def run(batch):
            encoded = self.tokenizer(batch, truncation=True, max_length=self.cfg.data.max_seq_length, padding=True,
                                     return_tensors="pt")
            encoded = {k: v.to(self.accelerator.device) for k, v in encoded.items()}
            logits = self.model(**encoded).logits.float()
            rows, positions = (encoded["input_ids"] == self.tokenizer.mask_token_id).nonzero(as_tuple=True)
            if len(rows) != len(batch) or len(set(rows.tolist())) != len(batch):
                raise LlmkitError("infer.template: each prompt must hold exactly one mask token (a text too long "
                                  "for data.max_seq_length loses it: raise that or put [MASK] before {text}; a "
                                  "text holding a mask token itself adds one)")
            return logits[rows, positions][:, self.word_ids].softmax(-1).cpu()

        with torch.inference_mode(), self.accelerator.autocast():
            return torch.stack(in_length_order(prompts, self.batch_size, run))

    def predict(self, texts: list[str]) -> list[dict]:
        """{label, score, scores} per text, as a fine-tuned classifier's infer output."""
        results = []
        for row in self.scores(texts).tolist():
            best = max(range(len(row)), key=row.__getitem__)
            results.append({"label": self.names[best], "score": row[best], "scores": dict(zip(self.names, row))})
        return results
