"""Contrastive sentence embeddings (`pretrain.objective: contrastive`): SimCSE's loss on sentences, one per
row, unsupervised (dropout makes a sentence's two encodings differ) or on (text, positive[, hard negative])
rows. The encoder is saved with its pooling, as sentence-transformers saves it; `infer` embeds."""

from __future__ import annotations

from llmkit.data.batching import pad_inputs
from llmkit.data.sentences import sentence_rows, sentence_texts
from llmkit.data.tokenizer import choose_tokenizer, fingerprint_files
from llmkit.errors import LlmkitError
from llmkit.objectives.base import ModelKind, mean_loss, pad_token_id
from llmkit.objectives.objective import Objective
from llmkit.paths import split_file

ENCODER = ModelKind("AutoModel", ("",), "encoder", "pretrain")  # every model has an encoder


class Contrastive(Objective):
    """Rows hold a sentence's `input_ids` and, when supervised, its positive's (`pair_input_ids`) and a
    hard negative's (`negative_input_ids`); the loss counts one per sentence."""

    model_kind = ENCODER
    pipeline_task = "feature-extraction"
    unused_parameters = True  # the pooler layer is not part of the pooling
    VIEWS = ("pair", "negative")

    @classmethod
    def training_data(cls, cfg):
        """Sentences (or pairs), one per row, read when training starts: nothing is packed."""
        data = cfg.data
        tokenizer = choose_tokenizer(cfg, lambda: sentence_texts(data), fingerprint_files([split_file(data, "train")]))
        return (tokenizer, sentence_rows(data, "train", tokenizer),
                sentence_rows(data, "validation", tokenizer, required=False))

    @classmethod
    def preprocess(cls, cfg) -> dict:
        raise LlmkitError("pretrain.objective: contrastive pretraining reads its sentences (or pairs) when it "
                          "starts; there is no packed corpus to preprocess, run `llmkit pretrain`")

    def evaluation_data(self, split: str, task: str | None = None):
        return sentence_rows(self.cfg.data, split, self.tokenizer)

    def wrap(self, model):
        from llmkit.objectives.losses import ContrastiveLoss

        return ContrastiveLoss(model, self.section.pooling, self.section.temperature)

    def collate(self, rows: dict, example_ids: list[int], epoch: int) -> dict:
        pad_id = pad_token_id(self.tokenizer)
        batch = pad_inputs({"input_ids": rows["input_ids"]}, pad_id)
        for view in self.VIEWS:
            if f"{view}_input_ids" in rows:
                padded = pad_inputs({"input_ids": rows[f"{view}_input_ids"]}, pad_id)
                batch.update({f"{view}_{name}": tensor for name, tensor in padded.items()})
        return batch

    def count(self, batch):
        return batch["input_ids"].new_tensor(len(batch["input_ids"]))

    def loss(self, module, batch):
        """`module` is a ContrastiveLoss: its forward is the summed loss of the batch."""
        return module(**batch), self.count(batch)

    def metrics(self, loss_sum: float, count: int, outputs: list) -> dict:
        return {"loss": mean_loss(loss_sum, count)}

    @classmethod
    def predictor(cls, cfg, source: str, tokenizer, run):
        """Sentence embeddings, pooled as the model was trained (infer.pooling `auto` reads it)."""
        from llmkit.objectives.embedding import SentenceEmbedding

        return SentenceEmbedding.predictor(cfg, source, tokenizer, run)
