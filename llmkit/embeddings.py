"""Sentence embeddings and zero-shot classification, with no training (config section `infer:`).

    embed:       texts --encoder--> token vectors --pool (mean of the real tokens | first token)--> unit vectors
    similarity:  a text's label = the label whose description's embedding has the highest cosine with it
    cloze:       "{text} It was [MASK]." --masked LM--> the label whose verbalizer word scores best at the mask

Texts run in length-sorted batches (little padding) and come back in input order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from llmkit.errors import LlmkitError
from llmkit.paths import resolve_path

if TYPE_CHECKING:
    from llmkit.config import Config

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
    from llmkit.data.batching import length_batches

    rows: list = [None] * len(texts)
    for ids in length_batches([len(text) for text in texts], batch_size):
        for i, row in zip(ids, run([texts[i] for i in ids])):
            rows[i] = row
    return rows


class Embedder:
    """Sentence embeddings by the encoder (AutoModel) at `source`, pooled as infer.pooling says: a
    [len(texts), hidden] float tensor per call; the model is loaded once."""

    def __init__(self, cfg: Config, source: str, tokenizer, accelerator, batch_size: int):
        from transformers import AutoModel

        from llmkit.modeling import require_model

        self.model = AutoModel.from_pretrained(require_model(source)).to(accelerator.device).eval()
        self.pooling = pooling_of(source, cfg.infer.pooling)
        self.tokenizer, self.section, self.max_length = tokenizer, cfg.infer, cfg.data.max_seq_length
        self.accelerator, self.batch_size = accelerator, batch_size

    def __call__(self, texts: list[str]):
        import torch

        def run(batch):
            encoded = self.tokenizer(batch, truncation=True, max_length=self.max_length, padding=True,
                                     return_tensors="pt")
            encoded = {k: v.to(self.accelerator.device) for k, v in encoded.items()}
            hidden = self.model(**encoded).last_hidden_state
            return pool(hidden.float(), encoded["attention_mask"], self.pooling, self.section.normalize).cpu()

        with torch.inference_mode(), self.accelerator.autocast():
            return torch.stack(in_length_order(texts, self.batch_size, run))


class ZeroShot:
    """Scores of each of `infer.labels` for texts, by description similarity or by a cloze prompt."""

    def __init__(self, cfg: Config, source: str, tokenizer, accelerator, batch_size: int):
        from llmkit.modeling import load_trained
        from llmkit.objectives.masked_lm import MASKED_LM

        self.cfg, self.section, self.tokenizer = cfg, cfg.infer, tokenizer
        self.accelerator, self.batch_size = accelerator, batch_size
        self.names = list(self.section.labels)
        if self.section.zero_shot_method == "similarity":
            self.embed = Embedder(cfg, source, tokenizer, accelerator, batch_size)
            self.label_vectors = self.embed(list(self.section.labels.values()))
        else:
            if tokenizer.mask_token is None:
                raise LlmkitError(f"infer.zero_shot_method: cloze needs a masked LM; {source} has no mask token")
            self.model = load_trained(source, MASKED_LM).to(accelerator.device).eval()
            self.word_ids = [self._word_id(name, word) for name, word in self.section.labels.items()]

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
            return self.embed(texts) @ self.label_vectors.T
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
