"""Data: deterministic tokenizers, packing that keeps every token, masking rates, batch plans."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import CONFIGS
from llmkit.config import TokenizerSection, load_config
from llmkit.data import batching
from llmkit.data import corpus as corpus_module
from llmkit.data.corpus import evaluation_blocks
from llmkit.data.corpus import prepare_corpus as _prepare_corpus
from llmkit.data.tokenizer import train_tokenizer
from llmkit.objectives import OBJECTIVES, MaskedLM
from llmkit.objectives.base import IGNORE_INDEX

SAMPLE = CONFIGS.parent / "llmkit" / "sample_data" / "corpus.txt"


def _lines():
    return [line for line in SAMPLE.read_text().splitlines() if line.strip()][:600]


@pytest.mark.parametrize("algorithm", ["wordpiece", "unigram", "bpe"])
def test_tokenizer_training_is_repeatable(algorithm):
    section = TokenizerSection(algorithm=algorithm, vocab_size=400)
    first, second = (train_tokenizer(section, _lines) for _ in range(2))
    assert first.get_vocab() == second.get_vocab()  # same pieces, same ids
    text = "honestly , the soup seemed not fresh"
    assert first(text)["input_ids"] == second(text)["input_ids"]
    assert len(first) <= 400


def test_trained_wordpiece_is_bert_like():
    tok = train_tokenizer(TokenizerSection(algorithm="wordpiece", vocab_size=400), _lines)
    ids = tok("The SOUP was bland")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.unk_token_id not in ids  # every character is in the vocabulary
    assert tok.decode(ids, skip_special_tokens=True) == "the soup was bland"


def prepare_corpus(cfg):
    return _prepare_corpus(cfg, OBJECTIVES[cfg.pretrain.objective].layout(cfg.pretrain))


def _corpus(tmp_path, *overrides, text: str | None = None):
    if text is not None:
        (tmp_path / "docs.txt").write_text(text)
        overrides = (f"data.data_dir={tmp_path}", "data.train_file=docs.txt", *overrides)
    return prepare_corpus(load_config(CONFIGS / "tiny" / "pretrain.yaml", list(overrides)))


def test_packing_keeps_every_token_in_order(tmp_path):
    docs = ["the food was great .", "", "  the room was dirty and the view was lovely .  ",
            "our waiter was rude ."] * 40
    corpus = _corpus(tmp_path, "data.validation_split_percentage=0", "data.max_seq_length=16",
                     text="\n".join(docs) + "\n")
    tok = corpus.tokenizer
    expected = []
    for doc in docs:
        if doc.strip():
            expected += tok(doc.strip(), add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
    blocks = corpus.train["input_ids"]
    assert all(block[0] == tok.cls_token_id and len(block) <= 16 for block in blocks)
    assert [t for block in blocks for t in block[1:]] == expected
    assert corpus.info["train_documents"] == 120 and corpus.info["validation_examples"] == 0


def test_streamed_packing_carries_across_batches_and_holds_out_whole_documents(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_module, "BATCH_CHARS", 60)  # a tokenizing batch of ~3 documents
    docs = [f"document {i} says the food was {'great' if i % 2 else 'bad'} ." for i in range(40)]
    corpus = _corpus(tmp_path, "data.max_seq_length=16", "data.validation_split_percentage=10",
                     text="\n".join(docs) + "\n")
    tok = corpus.tokenizer
    train, validation = corpus.train["input_ids"], corpus.validation["input_ids"]
    assert all(len(block) == 16 for block in train[:-1]) and len(train[-1]) <= 16  # only the very last is short
    assert corpus.info["train_documents"] == 36 and corpus.info["validation_documents"] == 4

    def documents(blocks):
        text = tok.decode([t for block in blocks for t in block[1:]])
        return [d.strip() for d in text.split(tok.sep_token) if d.strip()]

    held_out = documents(validation)
    assert len(held_out) == 4 and sorted(documents(train) + held_out) == sorted(tok.decode(tok(d)["input_ids"][1:-1])
                                                                              for d in docs)
    (tmp_path / "test.txt").write_text("\n".join(docs[:5]) + "\n")
    cfg = load_config(CONFIGS / "tiny" / "pretrain.yaml", [f"data.data_dir={tmp_path}", "data.test_file=test.txt",
                                                          "data.max_seq_length=16"])
    blocks = evaluation_blocks(cfg, "test", tok, MaskedLM.layout(cfg.pretrain))
    assert documents(blocks["input_ids"]) == [tok.decode(tok(d)["input_ids"][1:-1]) for d in docs[:5]]
    assert evaluation_blocks(cfg, "test", tok, MaskedLM.layout(cfg.pretrain)).cache_files == blocks.cache_files  # packed once, then cached


def test_blank_line_documents_and_dedupe(tmp_path):
    text = "a first paragraph .\nstill the first .\n \nthe second one .\n\n\nthe second one .\n \n"
    corpus = _corpus(tmp_path, "data.document_boundary=blank_line", "data.validation_split_percentage=0", text=text)
    assert corpus.info["train_documents"] == 3  # a line of spaces is blank too (as in WikiText)
    deduped = _corpus(tmp_path, "data.document_boundary=blank_line", "data.dedupe=true",
                      "data.validation_split_percentage=0", text=text)
    assert deduped.info["train_documents"] == 2


def test_second_preprocess_is_served_from_the_cache(tmp_path):
    first = _corpus(tmp_path, text="the food was great .\n" * 50)
    mtime = (first.folder / "info.json").stat().st_mtime_ns
    again = _corpus(tmp_path, f"output_dir={tmp_path}/elsewhere", text="the food was great .\n" * 50)
    assert again.folder == first.folder and (again.folder / "info.json").stat().st_mtime_ns == mtime
    changed = _corpus(tmp_path, text="the food was bad .\n" * 50)
    assert changed.folder != first.folder  # keyed by content, not by file name


def _masker(**kwargs):
    corpus = prepare_corpus(load_config(CONFIGS / "tiny" / "pretrain.yaml"))
    cfg = load_config(CONFIGS / "tiny" / "pretrain.yaml", ["seed=1", *(f"pretrain.{k}={v}" for k, v in kwargs.items())])
    return MaskedLM(cfg, corpus.tokenizer), corpus


def test_masking_rates_follow_the_config():
    masker, corpus = _masker()
    ids = list(range(len(corpus.train)))
    batch = masker.collate(corpus.train[ids], ids, epoch=0)
    original = batching.pad(corpus.train[ids]["input_ids"], corpus.tokenizer.pad_token_id)
    special = torch.isin(original, torch.tensor(corpus.tokenizer.all_special_ids))
    selected = batch["labels"] != IGNORE_INDEX
    eligible = (~special).sum().item()
    assert not (selected & special).any()  # [CLS]/[SEP]/[PAD] are never targets
    assert abs(selected.sum().item() / eligible - 0.15) < 0.01
    assert torch.equal(batch["labels"][selected], original[selected])
    masked = batch["input_ids"] == corpus.tokenizer.mask_token_id
    kept = (batch["input_ids"] == original) & selected
    assert abs(masked[selected].float().mean().item() - 0.8) < 0.02
    assert abs(kept.sum().item() / selected.sum().item() - 0.1) < 0.02  # random ones rarely hit the same id


def test_masking_depends_on_the_example_not_the_batch():
    masker, corpus = _masker(mlm_probability=0.3)
    alone = masker.collate(corpus.train[[5]], [5], epoch=2)
    together = masker.collate(corpus.train[[9, 5]], [9, 5], epoch=2)
    n = alone["input_ids"].shape[1]
    assert torch.equal(alone["input_ids"][0], together["input_ids"][1, :n])
    other_epoch = masker.collate(corpus.train[[5]], [5], epoch=3)
    assert not torch.equal(alone["labels"], other_epoch["labels"])  # fresh masks every epoch


@pytest.mark.parametrize("n,per_device,processes,accumulation", [(103, 4, 1, 1), (103, 4, 2, 1), (103, 2, 2, 3),
                                                                  (10, 4, 2, 2)])
@pytest.mark.parametrize("grouped", [False, True])
def test_epoch_plan_covers_each_example_at_most_once(n, per_device, processes, accumulation, grouped):
    lengths = np.random.default_rng(0).integers(3, 60, n) if grouped else None
    plans = [batching.epoch_plan(n, 7, 0, per_device, processes, rank, accumulation, lengths)
             for rank in range(processes)]
    steps = batching.steps_per_epoch(n, per_device, processes, accumulation)
    assert all(len(plan) == steps for plan in plans)
    seen = [i for plan in plans for step in plan for micro in step for i in micro]
    assert len(seen) == len(set(seen)) and n - len(seen) < processes * accumulation
    assert all(micro for plan in plans for step in plan for micro in step)  # no process ever gets an empty batch


@pytest.mark.parametrize("lengths", [None, np.arange(64) % 13])
def test_the_global_batch_does_not_depend_on_how_it_is_split(lengths):
    one = batching.epoch_plan(64, 3, 1, 8, 1, 0, 1, lengths)
    two = [batching.epoch_plan(64, 3, 1, 4, 2, rank, 1, lengths) for rank in range(2)]
    for step in range(len(one)):
        assert sorted(one[step][0]) == sorted(two[0][step][0] + two[1][step][0])


def test_length_grouping_cuts_padding_and_stays_a_function_of_seed_and_epoch():
    lengths = np.random.default_rng(1).integers(3, 120, 4000)

    def padded_tokens(plan):
        return sum(len(micro) * lengths[micro].max() for step in plan for micro in step)

    grouped = batching.epoch_plan(4000, 5, 0, 32, 1, 0, 1, lengths)
    assert padded_tokens(grouped) < 0.6 * padded_tokens(batching.epoch_plan(4000, 5, 0, 32, 1, 0, 1))
    assert grouped == batching.epoch_plan(4000, 5, 0, 32, 1, 0, 1, lengths)
    assert grouped != batching.epoch_plan(4000, 5, 1, 32, 1, 0, 1, lengths)
    # Steps are shuffled: the first steps are not simply the longest examples.
    firsts = [lengths[step[0]].max() for step in grouped[:10]]
    assert min(firsts) < np.percentile(lengths, 75)


def test_eval_shards_are_contiguous_and_may_be_empty():
    shards = [batching.eval_shard(3, 4, rank) for rank in range(4)]
    assert [i for s in shards for i in s] == [0, 1, 2] and any(len(s) == 0 for s in shards)


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert"])
def test_the_sparse_mlm_head_gives_the_dense_loss_and_gradients(model_type):
    """The LM head on masked rows only is a speed-up, never a different objective."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    from llmkit.objectives.losses import MaskedLMLoss

    masker, corpus = _masker()
    batch = masker.collate(corpus.train[list(range(8))], list(range(8)), epoch=0)
    config = AutoConfig.for_model(model_type, vocab_size=len(corpus.tokenizer), hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=128, max_position_embeddings=80,
                                  dim=64, n_layers=2, n_heads=2, hidden_dim=128)
    torch.manual_seed(0)
    model = AutoModelForMaskedLM.from_config(config).eval()
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    results = []
    for sparse in (True, False):
        model.zero_grad()
        loss = MaskedLMLoss(model, sparse)(labels=batch["labels"], **inputs)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (sparse_loss, sparse_grads), (dense_loss, dense_grads) = results
    count = (batch["labels"] != IGNORE_INDEX).sum()
    hf_loss = model(**inputs, labels=batch["labels"]).loss * count  # transformers' own (mean) loss
    assert torch.allclose(sparse_loss, dense_loss, rtol=1e-5) and torch.allclose(sparse_loss, hf_loss, rtol=1e-5)
    # atol: chunks add their gradients in another order (largest entries ~10)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(sparse_grads, dense_grads, strict=True))
    assert MaskedLMLoss(model).head == {"bert": "cls", "roberta": "lm_head", "distilbert": None}[model_type]


@pytest.mark.parametrize("algorithm", ["wordpiece", "bpe", "unigram"])
def test_whole_word_masking_takes_every_piece_of_a_word(algorithm, tmp_path):
    """Words come from the tokenizer's word ids, so this holds for WordPiece, byte-level BPE and Unigram."""
    overrides = [f"tokenizer.algorithm={algorithm}", "tokenizer.vocab_size=300", "pretrain.whole_word_mask=true",
                 "pretrain.mlm_probability=0.3", f"data.cache_dir={tmp_path}"]
    cfg = load_config(CONFIGS / "tiny" / "pretrain.yaml", ["seed=1", *overrides])
    corpus = prepare_corpus(cfg)
    ids = list(range(len(corpus.train)))
    rows = corpus.train[ids]
    batch = MaskedLM(cfg, corpus.tokenizer).collate(rows, ids, epoch=0)
    starts = batching.pad(rows["word_starts"], 1).bool()
    selected = batch["labels"] != IGNORE_INDEX
    special = torch.isin(batching.pad(rows["input_ids"], corpus.tokenizer.pad_token_id),
                         torch.tensor(corpus.tokenizer.all_special_ids))
    word = starts.long().cumsum(1)  # word number of each token within its block
    pieces = (~starts & ~special).sum().item()
    assert pieces > 100, "a vocabulary of 300 splits many words into several tokens"
    for row in range(len(ids)):
        for w in word[row][~special[row]].unique():
            members = selected[row][(word[row] == w) & ~special[row]]
            assert members.all() or not members.any()  # a word is taken whole or not at all
    words = (starts & ~special).sum().item()
    assert abs((selected & starts).sum().item() / words - 0.3) < 0.03
    assert corpus.folder != prepare_corpus(load_config(CONFIGS / "tiny" / "pretrain.yaml", overrides[:2] + overrides[4:])).folder


def test_causal_lm_blocks_are_one_stream_with_eos_between_documents(tmp_path):
    docs = ["the food was great .", "our waiter was rude .", "the view was lovely ."] * 20
    corpus = _corpus(tmp_path, "pretrain.objective=clm", "tokenizer.algorithm=bpe", "data.max_seq_length=16",
                     "data.validation_split_percentage=0", text="\n".join(docs) + "\n")
    tok = corpus.tokenizer
    blocks = corpus.train["input_ids"]
    assert all(len(block) == 16 for block in blocks[:-1])  # no [CLS]/<s> per block: every position is a target
    expected = []
    for doc in docs:
        expected += tok(doc, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert [t for block in blocks for t in block] == expected


def test_a_tokenizer_trained_on_other_documents_is_not_taken_from_the_cache(tmp_path):
    text = "".join(f"document {i} : the {w} was great .\n" for i, w in enumerate(["food", "room", "view"] * 20))
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    everything = _corpus(tmp_path, cache, "data.validation_split_percentage=0", text=text)
    held_out = _corpus(tmp_path, cache, "data.validation_split_percentage=20", text=text)
    assert everything.info["train_documents"] == 60 and held_out.info["train_documents"] == 48
    assert len(list((tmp_path / "cache" / "tokenizers").iterdir())) == 2  # one per set of training documents


def _numbered_documents(sentence_lengths: list[list[int]]):
    """Documents whose token ids say where they come from: document d's t-th token is d * 1000 + t."""
    from llmkit.data.pairs import Document

    return [Document({"input_ids": d * 1000 + np.arange(sum(lengths), dtype=np.int32)}, np.cumsum(lengths))
            for d, lengths in enumerate(sentence_lengths)]


@pytest.mark.parametrize("task", ["nsp", "sop"])
def test_segment_pairs_are_cut_from_one_document_at_sentence_ends(task):
    from llmkit.data.pairs import NOT_NEXT, PairMaker

    rng = np.random.default_rng(0)
    docs = _numbered_documents([rng.integers(1, 12, size=rng.integers(1, 12)).tolist() for _ in range(60)]
                               + [[80], [1, 40, 1], []])  # sentences longer than the budget, one-token ones, none
    ends = {d: set(doc.ends.tolist()) for d, doc in enumerate(docs)}
    cls, sep, budget = -1, -2, 29
    maker = PairMaker(task, budget, {"input_ids": (cls, sep)}, seed=0)
    rows = {k: v for k, v in maker.rows(docs[:30]).items()}
    more = maker.rows(docs[30:])  # the next batch may take random segments from this one's documents
    for key in rows:
        rows[key] += more[key]
    labels = np.array(rows["next_sentence_label"])
    assert 0.4 < labels.mean() < 0.6
    for ids, types, label in zip(rows["input_ids"], rows["token_type_ids"], labels):
        ids = ids.tolist()
        assert ids[0] == cls and ids[-1] == sep and ids.count(sep) == 2 and len(ids) <= budget + 3
        split = ids.index(sep)
        a, b = np.array(ids[1:split]), np.array(ids[split + 1:-1])
        assert len(a) and len(b) and types.tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        for segment in (a, b):  # each segment is a contiguous run of one document
            assert (np.diff(segment) == 1).all()
        first, second = (b, a) if task == "sop" and label == NOT_NEXT else (a, b)
        if task == "nsp" and label == NOT_NEXT:
            assert first[0] // 1000 != second[0] // 1000  # B is another document's, from a sentence start
            assert second[0] % 1000 == 0 or second[0] % 1000 in ends[second[0] // 1000]
        else:  # B is what follows A in the same document, A ending at a sentence end where it has one
            assert second[0] == first[-1] + 1 and first[0] // 1000 == second[-1] // 1000
            document = first[0] // 1000
            if any(first[0] % 1000 < end < second[-1] % 1000 + 1 for end in ends[document]):
                assert second[0] % 1000 in ends[document]


def test_segment_pairs_through_preprocessing_mark_words_and_split_sentences(tmp_path):
    text = "".join(f"Topic {d} begins here. The cat sat on mat {d}! Does it rain {d}? Nobody knows why.\n"
                   for d in range(40))
    corpus = _corpus(tmp_path, "pretrain.objective=mlm+sop", "pretrain.whole_word_mask=true",
                     "data.validation_split_percentage=10", "data.max_seq_length=48", text=text)
    tok, train = corpus.tokenizer, corpus.train
    assert corpus.info["validation_examples"] > 0 and set(train.column_names) == {
        "input_ids", "token_type_ids", "word_starts", "next_sentence_label"}
    for row in train:
        decoded = tok.decode(row["input_ids"])
        assert decoded.startswith("[CLS]") and decoded.count("[SEP]") == 2
        first = decoded.removeprefix("[CLS] ").split(" [SEP]")[0]
        assert first.endswith((".", "!", "?"))  # whole sentences: every document has four
        assert len(row["word_starts"]) == len(row["input_ids"]) and row["word_starts"][0]
    assert 0.3 < np.mean(train["next_sentence_label"]) < 0.7


def _pair_model(model_type: str, vocab_size: int):
    from transformers import AutoConfig, AutoModelForPreTraining

    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=128, max_position_embeddings=80,
                                  embedding_size=32)
    torch.manual_seed(0)
    return AutoModelForPreTraining.from_config(config).eval()


@pytest.mark.parametrize("model_type", ["bert", "albert"])
def test_the_pair_loss_is_berts_pretraining_loss(model_type):
    """Summed over masked tokens, so the loop's division by their count gives transformers' mean
    masked-LM loss plus mean pair loss; the sparse head changes nothing."""
    from llmkit.objectives.losses import MaskedLMPairLoss

    masker, corpus = _masker()
    batch = masker.collate(corpus.train[list(range(8))], list(range(8)), epoch=0)
    batch["token_type_ids"] = (torch.arange(batch["input_ids"].shape[1]) > 20).long().expand_as(batch["input_ids"])
    labels = torch.tensor([0, 1] * 4)
    model = _pair_model(model_type, len(corpus.tokenizer))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    ours = [MaskedLMPairLoss(model, sparse)(labels=batch["labels"], next_sentence_label=labels, **inputs)
            for sparse in (True, False)]
    label_name = "sentence_order_label" if model_type == "albert" else "next_sentence_label"
    theirs = model(**inputs, labels=batch["labels"], **{label_name: labels}).loss
    count = (batch["labels"] != IGNORE_INDEX).sum()
    assert torch.allclose(ours[0], ours[1], rtol=1e-5) and torch.allclose(ours[0] / count, theirs, rtol=1e-5)


def test_pseudo_perplexity_masks_each_token_in_turn():
    import math

    from llmkit.objectives.losses import MaskedLMLoss

    masker, corpus = _masker()
    masker.pseudo_perplexity = True
    blocks = corpus.train[[0, 1]]["input_ids"]
    rows = {"input_ids": [blocks[0][:30], blocks[1][:7]]}  # two lengths: padding must not count
    batch = masker.collate(rows, [0, 1], epoch=0)
    from transformers import AutoModelForMaskedLM

    mlm = AutoModelForMaskedLM.from_config(_pair_model("bert", len(corpus.tokenizer)).config).eval()
    with torch.no_grad():
        outputs = masker.eval_outputs(MaskedLMLoss(mlm), batch)
        for ids, output in zip(rows["input_ids"], outputs):  # by hand: one forward per position
            positions = [p for p, token in enumerate(ids) if token not in masker.special_ids]
            loss = 0.0
            for position in positions:
                masked = torch.tensor([ids])
                masked[0, position] = corpus.tokenizer.mask_token_id
                loss -= mlm(input_ids=masked).logits[0, position].log_softmax(-1)[ids[position]].item()
            assert output["pll_tokens"] == len(positions) and math.isclose(output["pll_loss"], loss, rel_tol=1e-4)
    metrics = masker.metrics(0.0, 1, outputs)
    assert math.isclose(metrics["pseudo_perplexity"],
                        math.exp(sum(o["pll_loss"] for o in outputs) / sum(o["pll_tokens"] for o in outputs)))

