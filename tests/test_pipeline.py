"""The five stages end to end through the CLI, on the tiny configs and the built-in sample."""

from __future__ import annotations

import json

import pytest

from conftest import CONFIGS, read_jsonl, run_cli

PRETRAIN = CONFIGS / "tiny" / "pretrain.yaml"
FINETUNE = CONFIGS / "tiny" / "finetune.yaml"
NO_DROPOUT = ["model.config.hidden_dropout_prob=0", "model.config.attention_probs_dropout_prob=0"]


def ok(result):
    assert result.exit_code == 0, result.output + (repr(result.exception) if result.exception else "")
    return result


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """preprocess -> pretrain -> finetune (from the pretrained model), once for this module's tests."""
    root = tmp_path_factory.mktemp("pipeline")
    mlm, classifier = root / "mlm", root / "classifier"
    ok(run_cli("preprocess", PRETRAIN))
    ok(run_cli("pretrain", PRETRAIN, f"output_dir={mlm}", "train.max_steps=60", "train.logging_steps=10",
               "train.save_steps=20", "train.eval_steps=30"))
    ok(run_cli("finetune", FINETUNE, f"output_dir={classifier}", f"model.name_or_path={mlm}",
               "train.num_train_epochs=2"))
    return root


def test_pretraining_loss_falls_and_the_run_is_recorded(pipeline):
    mlm = pipeline / "mlm"
    lines = read_jsonl(mlm / "metrics.jsonl")
    train = [line for line in lines if "loss" in line]
    evals = [line for line in lines if "eval_loss" in line]
    assert train[-1]["loss"] < 0.8 * train[0]["loss"]
    assert [e["step"] for e in evals] == [30, 60] and evals[-1]["eval_perplexity"] < evals[0]["eval_perplexity"] * 1.05
    assert all(line["tokens_per_s"] > 0 and 0 <= line["learning_rate"] for line in train)
    info = json.loads((mlm / "run_info.json").read_text())
    assert info["num_processes"] == 1 and info["versions"]["transformers"]
    assert (mlm / "config.yaml").exists() and (mlm / "model.safetensors").exists()
    assert [p.name for p in mlm.glob("checkpoint-*")] == ["checkpoint-40"]  # save_total_limit: 1
    assert not list(mlm.glob(".tmp-*"))


def test_finetuning_learns_the_sample_task(pipeline):
    results = json.loads((pipeline / "classifier" / "eval_results.json").read_text())
    assert results["split"] == "validation" and results["accuracy"] > 0.8
    config = json.loads((pipeline / "classifier" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}


def test_evaluate_writes_flat_results(pipeline, tmp_path):
    result = ok(run_cli("evaluate", FINETUNE, f"output_dir={pipeline / 'classifier'}", "--split", "test"))
    results = json.loads((pipeline / "classifier" / "test_results.json").read_text())
    assert {"split", "num_examples", "loss", "accuracy", "precision", "recall", "f1", "mcc"} <= set(results)
    assert results["split"] == "test" and results["num_examples"] == 300 and results["accuracy"] > 0.8
    assert sum(map(sum, results["confusion_matrix"]["matrix"])) == 300
    assert json.loads(result.output[result.output.index("{"):])["accuracy"] == results["accuracy"]

    mlm = ok(run_cli("evaluate", PRETRAIN, f"output_dir={pipeline / 'mlm'}"))
    perplexity = json.loads((pipeline / "mlm" / "eval_results.json").read_text())["perplexity"]
    assert 1 < perplexity < 200, mlm.output


def test_infer_classifies_texts_from_a_file_and_stdin(pipeline, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("the food was really delicious , we loved it .\n\nthe staff was rude , never again .\n")
    output = tmp_path / "preds.jsonl"
    ok(run_cli("infer", FINETUNE, f"output_dir={pipeline / 'classifier'}", "--input", texts, "--output", output))
    predictions = read_jsonl(output)
    assert [p["label"] for p in predictions] == ["positive", "negative"]
    assert all(abs(sum(p["scores"].values()) - 1) < 1e-4 and p["score"] == max(p["scores"].values())
               for p in predictions)
    streamed = ok(run_cli("infer", FINETUNE, f"output_dir={pipeline / 'classifier'}", "--input", "-",
                          input="the movie was not boring .\n"))
    assert json.loads(streamed.output.strip().splitlines()[-1])["text"] == "the movie was not boring ."


def test_infer_batches_by_length_and_answers_in_file_order(pipeline, tmp_path):
    """Examples are tokenized once, sorted by token count and padded per batch: each prediction is the
    model's on that text alone, whatever its batch mates."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = ["the soup was cold .", "the waiter was very friendly and the pasta was wonderful , we loved it .",
             "awful .", "the room was clean , the view was lovely , the breakfast was great .",
             "never again , the staff was rude and the food was bland .", "great pizza .", "the bed was dirty ."]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    ok(run_cli("infer", FINETUNE, f"output_dir={pipeline / 'classifier'}", "--input", tmp_path / "texts.txt",
               "--output", tmp_path / "p.jsonl", "--batch-size", "3"))
    predictions = read_jsonl(tmp_path / "p.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(pipeline / "classifier")
    model = AutoModelForSequenceClassification.from_pretrained(pipeline / "classifier").eval()
    with torch.no_grad():
        alone = [model(**tokenizer(text, return_tensors="pt")).logits.softmax(-1)[0].tolist() for text in texts]
    assert [p["text"] for p in predictions] == texts
    assert all(list(p["scores"].values()) == pytest.approx(a, abs=1e-5) for p, a in zip(predictions, alone))


def test_infer_fills_masks_with_the_pretrained_model(pipeline):
    """The top-k fillers are the model's own: the same tokens and scores as transformers' fill-mask pipeline."""
    from transformers import pipeline as hf_pipeline

    texts = ["the food was [MASK] .", "the [MASK] was dirty and the [MASK] was rude ."]
    result = ok(run_cli("infer", PRETRAIN, f"output_dir={pipeline / 'mlm'}", "--input", "-", "--top-k", "3",
                        input="\n".join(texts) + "\n"))
    predictions = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [p["text"] for p in predictions] == texts and [len(p["predictions"]) for p in predictions] == [1, 2]
    fill = hf_pipeline("fill-mask", model=str(pipeline / "mlm"), top_k=3)
    for prediction, text in zip(predictions, texts):
        theirs = fill(text)
        theirs = [theirs] if isinstance(theirs[0], dict) else theirs  # one mask: a flat list
        for ours, mask in zip(prediction["predictions"], theirs, strict=True):
            assert [c["token_id"] for c in ours] == [c["token"] for c in mask]
            assert [c["score"] for c in ours] == pytest.approx([c["score"] for c in mask], abs=1e-5)


def test_outputs_load_in_plain_transformers_pipelines(pipeline):
    from transformers import pipeline as hf_pipeline

    classify = hf_pipeline("text-classification", model=str(pipeline / "classifier"))
    assert classify("the dessert was absolutely wonderful , highly recommended .")[0]["label"] == "positive"
    fill = hf_pipeline("fill-mask", model=str(pipeline / "mlm"))
    candidates = fill("the room was [MASK] .")
    assert len(candidates) == 5 and all(c["sequence"].startswith("the room was") for c in candidates)
    assert [c["score"] for c in candidates] == sorted((c["score"] for c in candidates), reverse=True)
    assert sum(c["score"] for c in candidates) > 5 / 1000  # better than uniform over the 1,000-token vocabulary


def test_a_trained_output_dir_is_not_overwritten_by_accident(pipeline):
    before = (pipeline / "mlm" / "model.safetensors").read_bytes()
    result = run_cli("pretrain", PRETRAIN, f"output_dir={pipeline / 'mlm'}", "train.max_steps=2")
    assert result.exit_code == 2 and "train.overwrite_output_dir=true" in result.output
    assert (pipeline / "mlm" / "model.safetensors").read_bytes() == before


def test_infer_refuses_a_model_without_the_asked_head(pipeline):
    result = run_cli("infer", FINETUNE, f"output_dir={pipeline / 'mlm'}", "--input", "-", input="hello\n")
    assert result.exit_code == 2 and "has no sequence-classification head" in result.output


def test_the_tiny_finetune_config_runs_on_its_own(tmp_path):
    ok(run_cli("finetune", FINETUNE, f"output_dir={tmp_path}", "train.num_train_epochs=1"))
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["accuracy"] > 0.6  # from scratch, one epoch: clearly above the 0.5 of chance


def test_loss_is_the_same_however_the_global_batch_is_accumulated(tmp_path):
    """32 examples as 1 x 32 or as 4 micro-batches of 8: the same per-step loss (a token-weighted mean)."""
    losses = []
    for per_device, accumulation in ((32, 1), (8, 4)):
        out = tmp_path / f"b{per_device}"
        ok(run_cli("pretrain", PRETRAIN, f"output_dir={out}", "train.max_steps=4", "train.logging_steps=1",
                   f"train.per_device_train_batch_size={per_device}",
                   f"train.gradient_accumulation_steps={accumulation}", "train.eval_strategy=no", *NO_DROPOUT))
        losses.append([line["loss"] for line in read_jsonl(out / "metrics.jsonl") if "loss" in line])
    assert len(losses[0]) == 4
    for a, b in zip(*losses, strict=True):
        assert abs(a - b) <= 1e-4 * abs(a)


def test_sentence_pairs_with_integer_labels(tmp_path):
    """Pairs from a .jsonl file, labels 0/1 (do the two reviews agree?): trains, evaluates, infers."""
    import random

    rows = [line.split("\t") for line in (CONFIGS.parent / "llmkit" / "sample_data" / "sentiment_train.tsv")
            .read_text().splitlines()[1:]]
    rng = random.Random(0)
    with (tmp_path / "pairs.jsonl").open("w") as f:
        for _ in range(400):
            (a, la), (b, lb) = rng.sample(rows, 2)
            f.write(json.dumps({"first": a, "second": b, "same": int(la == lb)}) + "\n")
    out = tmp_path / "out"
    ok(run_cli("finetune", FINETUNE, f"output_dir={out}", f"data.data_dir={tmp_path}", "data.train_file=pairs.jsonl",
               "data.validation_file=pairs.jsonl", "data.test_file=null", "data.text_column=first",
               "data.text_pair_column=second", "data.label_column=same", "data.max_eval_samples=50",
               "train.num_train_epochs=1"))
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "0", "1": "1"}
    assert json.loads((out / "eval_results.json").read_text())["num_examples"] == 50
    ok(run_cli("infer", FINETUNE, f"output_dir={out}", "data.text_column=first", "data.text_pair_column=second",
               "--input", tmp_path / "pairs.jsonl", "--output", tmp_path / "preds.jsonl"))
    predictions = read_jsonl(tmp_path / "preds.jsonl")
    assert len(predictions) == 400 and {"text", "text_pair", "label", "score"} <= set(predictions[0])
    assert {p["label"] for p in predictions} <= {"0", "1"}


def test_bf16_mixed_precision_trains_on_cpu(tmp_path):
    ok(run_cli("pretrain", PRETRAIN, f"output_dir={tmp_path}", "train.max_steps=3", "train.logging_steps=1",
               "train.mixed_precision=bf16", "train.eval_strategy=no"))
    assert json.loads((tmp_path / "run_info.json").read_text())["mixed_precision"] == "bf16"
    losses = [line["loss"] for line in read_jsonl(tmp_path / "metrics.jsonl") if "loss" in line]
    assert len(losses) == 3 and all(0 < loss < 20 for loss in losses)


@pytest.mark.parametrize("optim", ["adamw", "adamw_torch", "adam", "sgd"])
def test_each_optimizer_trains(optim, tmp_path):
    ok(run_cli("pretrain", PRETRAIN, f"output_dir={tmp_path}", "train.max_steps=6", "train.logging_steps=1",
               f"train.optim={optim}", "train.sgd_momentum=0.9", "train.learning_rate=0.003",
               "train.eval_strategy=no", "train.warmup_ratio=0", *NO_DROPOUT))
    losses = [line["loss"] for line in read_jsonl(tmp_path / "metrics.jsonl") if "loss" in line]
    assert losses[-1] < losses[0]


def test_evaluate_needs_only_the_file_it_scores(pipeline):
    ok(run_cli("evaluate", FINETUNE, f"output_dir={pipeline / 'classifier'}", "data.train_file=null",
               "data.validation_file=null", "--split", "test"))


def test_throughput_counts_training_time_only(tmp_path, monkeypatch):
    """Evaluating every step must not count in tokens_per_s (it measures training). On the loop's clock, each
    reading moves a millisecond and each evaluation an hour: every logged rate stays far above an hour's."""
    from types import SimpleNamespace

    from llmkit import trainer

    clock = {"now": 0.0}
    real_evaluate = trainer.evaluate_tasks

    def tick():
        clock["now"] += 1e-3
        return clock["now"]

    def slow_evaluation(*args, **kwargs):
        clock["now"] += 3600.0
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer, "time", SimpleNamespace(perf_counter=tick))
    monkeypatch.setattr(trainer, "evaluate_tasks", slow_evaluation)
    ok(run_cli("pretrain", PRETRAIN, f"output_dir={tmp_path}", "train.max_steps=30", "train.logging_steps=10",
               "train.eval_strategy=steps", "train.eval_steps=3", "data.max_eval_samples=16"))
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    rates = [x["tokens_per_s"] for x in lines if "loss" in x]
    assert sum("eval_loss" in x for x in lines) == 10 and len(rates) == 3
    assert min(rates) > 1e5, rates  # 10 steps of 32 x 64 tokens in an hour would be 6 tokens/s


def test_max_time_stops_evaluates_and_saves_like_a_finished_run(tmp_path):
    out = tmp_path / "budget"
    ok(run_cli("pretrain", PRETRAIN, f"output_dir={out}", "train.max_steps=100000", "train.max_time=2s",
               "train.eval_strategy=no"))
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["stopped_by"] == "max_time" and 0 < state["global_step"] < 100000 and state["finished"]
    assert state["train_seconds"] >= 2  # it stops at the first step past the budget, never before
    assert (out / "model.safetensors").exists() and "eval_loss" in read_jsonl(out / "metrics.jsonl")[-1]
    result = run_cli("pretrain", PRETRAIN, f"output_dir={tmp_path / 'bad'}", "train.max_time=half an hour")
    assert result.exit_code == 2 and "max_time: 'half an hour' is not a positive duration" in result.output


def test_infer_embeds_texts_to_npy_and_jsonl(pipeline, tmp_path):
    import numpy as np

    texts = ["the food was great .", "the room was dirty and small .", "the food was great ."]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    embed = [f"output_dir={tmp_path}", f"model.name_or_path={pipeline / 'mlm'}", "infer.task=embed"]
    ok(run_cli("infer", FINETUNE, *embed, "--input", tmp_path / "texts.txt", "--output", tmp_path / "e.npy"))
    vectors = np.load(tmp_path / "e.npy")
    assert vectors.shape == (3, 128) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.allclose(vectors[0], vectors[2], atol=1e-5) and not np.allclose(vectors[0], vectors[1], atol=1e-2)
    ok(run_cli("infer", FINETUNE, *embed, "infer.pooling=cls", "infer.normalize=false", "--input",
               tmp_path / "texts.txt", "--output", tmp_path / "e.jsonl"))
    rows = read_jsonl(tmp_path / "e.jsonl")
    assert [r["text"] for r in rows] == texts and len(rows[1]["embedding"]) == 128
    assert not np.allclose(np.linalg.norm(rows[1]["embedding"]), 1)


def test_evaluate_embeddings_by_the_spearman_of_pair_cosines(pipeline, tmp_path):
    sentences = ["the food was great .", "our waiter was rude .", "the view was lovely .", "the room was dirty ."]
    rows = [{"a": s, "b": s, "score": 5.0} for s in sentences]  # identical pairs: the most similar
    rows += [{"a": s, "b": t, "score": 1.0} for s, t in zip(sentences, sentences[1:])]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ok(run_cli("evaluate", FINETUNE, f"output_dir={tmp_path}", f"model.name_or_path={pipeline / 'mlm'}",
               "infer.task=embed", f"data.validation_file={tmp_path / 'pairs.jsonl'}", "data.text_column=a",
               "data.text_pair_column=b", "data.label_column=score"))
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["num_examples"] == 7 and results["spearman"] > 0.8


@pytest.mark.parametrize("method", ["similarity", "cloze"])
def test_zero_shot_classifies_without_training(method, pipeline, tmp_path):
    texts = {"good": "the food was great .", "bad": "the room was dirty and small ."}
    (tmp_path / "labelled.jsonl").write_text("".join(json.dumps({"text": t, "label": k}) + "\n"
                                                     for k, t in texts.items()))
    labels = texts if method == "similarity" else {"good": "great", "bad": "dirty"}
    zero_shot = [f"output_dir={tmp_path}", f"model.name_or_path={pipeline / 'mlm'}", "infer.task=zero_shot",
                 f"infer.zero_shot_method={method}", f"infer.labels={json.dumps(labels)}",
                 "infer.template=[MASK] : {text}"]
    result = ok(run_cli("infer", FINETUNE, *zero_shot, "--input", "-", input="\n".join(texts.values())))
    predictions = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(set(p["scores"]) == {"good", "bad"} and p["label"] in texts for p in predictions)
    if method == "similarity":  # a text whose label description is itself: cosine 1
        assert [p["label"] for p in predictions] == ["good", "bad"] and predictions[0]["score"] > 0.999
        ok(run_cli("evaluate", FINETUNE, *zero_shot, f"data.validation_file={tmp_path / 'labelled.jsonl'}"))
        results = json.loads((tmp_path / "eval_results.json").read_text())
        assert results["num_examples"] == 2 and results["accuracy"] == 1.0
    else:  # probabilities over the verbalizer words
        assert all(abs(sum(p["scores"].values()) - 1) < 1e-4 for p in predictions)
        bad = run_cli("infer", FINETUNE, *zero_shot, 'infer.labels={"good": "great", "bad": "unfriendliest"}',
                      "--input", "-", input="the food was great .")
        assert bad.exit_code == 2 and "infer.labels.bad: 'unfriendliest' is" in bad.output


def test_zero_shot_needs_labels_and_cloze_needs_a_masked_lm(pipeline, tmp_path):
    result = run_cli("infer", FINETUNE, f"output_dir={tmp_path}", "infer.task=zero_shot", "--input", "-", input="x")
    assert result.exit_code == 2 and "zero_shot needs labels" in result.output
    result = run_cli("infer", FINETUNE, f"output_dir={tmp_path}", f"model.name_or_path={pipeline / 'classifier'}",
                     "infer.task=zero_shot", "infer.zero_shot_method=cloze", 'infer.labels={"a": "great", "b": "bad"}',
                     "--input", "-", input="the food was great .")
    assert result.exit_code == 2 and "has no masked-lm head" in result.output


def test_whole_word_masking_pretrains_through_the_cli(tmp_path):
    out = tmp_path / "wwm"
    ok(run_cli("pretrain", PRETRAIN, f"output_dir={out}", "pretrain.whole_word_mask=true", "pretrain.mlm_probability=0.3",
               "train.max_steps=30", "train.logging_steps=10", "train.eval_strategy=no"))
    train = [line for line in read_jsonl(out / "metrics.jsonl") if "loss" in line]
    assert train[-1]["loss"] < train[0]["loss"] and "eval_perplexity" in read_jsonl(out / "metrics.jsonl")[-1]


def test_causal_lm_pretrains_evaluates_and_generates(tmp_path):
    clm, out = CONFIGS / "tiny" / "clm.yaml", tmp_path / "clm"
    ok(run_cli("pretrain", clm, f"output_dir={out}", "train.max_steps=60"))
    lines = read_jsonl(out / "metrics.jsonl")
    train = [line for line in lines if "loss" in line]
    assert train[-1]["loss"] < 0.7 * train[0]["loss"] and lines[-1]["eval_perplexity"] < 40
    (tmp_path / "test.txt").write_text("the food was great .\nour waiter was rude .\n")
    ok(run_cli("evaluate", clm, f"output_dir={out}", f"data.test_file={tmp_path / 'test.txt'}", "--split", "test"))
    results = json.loads((out / "test_results.json").read_text())
    assert results["perplexity"] < 100 and results["num_predicted_tokens"] > 10  # uniform over 1,000 tokens: 1,000

    def generate(*settings):
        result = ok(run_cli("infer", clm, f"output_dir={out}", *settings, "--input", "-", input="the food was\n"))
        return json.loads(result.stdout)["generated"]

    greedy = generate("infer.max_new_tokens=8")
    assert greedy.strip() and greedy == generate("infer.max_new_tokens=8")
    sampled = [generate("infer.do_sample=true", "infer.temperature=1.5", f"seed={seed}") for seed in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]  # a seed fixes the sample

    from transformers import pipeline

    text = pipeline("text-generation", model=str(out))("the food was", max_new_tokens=5, do_sample=False)
    assert text[0]["generated_text"].startswith("the food was")
    llama = '{model_type: llama, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 128}'
    ok(run_cli("pretrain", clm, f"output_dir={tmp_path / 'llama'}", f"model.config={llama}", "train.max_steps=20"))
    assert "LlamaForCausalLM" in (tmp_path / "llama" / "config.json").read_text()


def _mean_off_diagonal_cosine(vectors) -> float:
    import numpy as np

    sims = vectors @ vectors.T
    return float((sims.sum() - np.trace(sims)) / (len(vectors) * (len(vectors) - 1)))


def test_unsupervised_simcse_learns_embeddings_saved_with_their_pooling(pipeline, tmp_path):
    import numpy as np

    out = tmp_path / "simcse"
    (tmp_path / "speech.txt").write_text(
        "The food was great. Our waiter was rude! The view was lovely. The room was dirty and small.\n"
        "We loved the breakfast. The staff were friendly? The price was too high. The bed was comfortable.\n" * 20)
    ok(run_cli("pretrain", PRETRAIN, f"output_dir={out}", f"model.name_or_path={pipeline / 'mlm'}",
               "pretrain.objective=contrastive", f"data.train_file={tmp_path / 'speech.txt'}",
               "data.document_boundary=sentence", "train.max_steps=30", "train.logging_steps=10",
               "train.learning_rate=1e-3", "train.per_device_train_batch_size=8"))
    train = [line for line in read_jsonl(out / "metrics.jsonl") if "loss" in line]
    # Chance is ln 8 = 2.08; repeated sentences in a batch keep the floor well above 0.
    assert train[0]["loss"] > 1.8 and train[-1]["loss"] < 0.8 * train[0]["loss"]
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    texts = tmp_path / "texts.txt"
    texts.write_text("the food was great .\nour waiter was rude .\nthe view was lovely .\nthe price was too high .\n")
    ok(run_cli("infer", FINETUNE, f"output_dir={out}", "infer.task=embed", "--input", texts,
               "--output", tmp_path / "e.npy"))  # pooling auto: the saved one
    ok(run_cli("infer", FINETUNE, f"output_dir={tmp_path}", f"model.name_or_path={pipeline / 'mlm'}",
               "infer.task=embed", "infer.pooling=mean", "--input", texts, "--output", tmp_path / "before.npy"))
    after, before = np.load(tmp_path / "e.npy"), np.load(tmp_path / "before.npy")
    assert _mean_off_diagonal_cosine(after) < min(0.9, _mean_off_diagonal_cosine(before))  # spread out, no collapse


def test_supervised_simcse_on_pairs_with_hard_negatives(tmp_path):
    rows = [{"text": f"the {w} was great .", "positive": f"i loved the {w} .", "negative": f"the {w} was awful ."}
            for w in ["food", "room", "view", "staff", "bed", "price", "pool", "bar"] * 4]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sup"
    pairs = [f"data.train_file={tmp_path / 'pairs.jsonl'}", "data.text_pair_column=positive",
             "data.negative_column=negative", "pretrain.objective=contrastive"]
    ok(run_cli("pretrain", PRETRAIN, f"output_dir={out}", *pairs, f"data.validation_file={tmp_path / 'pairs.jsonl'}",
               "tokenizer.vocab_size=200", "train.max_steps=40", "train.logging_steps=10",
               "train.per_device_train_batch_size=8"))
    lines = read_jsonl(out / "metrics.jsonl")
    train = [line for line in lines if "loss" in line]
    assert train[-1]["loss"] < train[0]["loss"] and "eval_loss" in lines[-1]
    ok(run_cli("evaluate", PRETRAIN, f"output_dir={out}", *pairs, f"data.validation_file={tmp_path / 'pairs.jsonl'}"))
    assert json.loads((out / "eval_results.json").read_text())["loss"] == pytest.approx(lines[-1]["eval_loss"], rel=1e-4)
    result = run_cli("pretrain", PRETRAIN, f"output_dir={tmp_path / 'bad'}", *pairs[1:],
                     f"data.train_file={tmp_path / 'pairs.jsonl'}", "data.negative_column=negatives")
    assert result.exit_code == 2 and "has no column 'negatives'" in result.output


def _topic_documents(path, count: int = 240):
    """Documents on four topics, every sentence naming its topic: a segment from another document is
    mostly off-topic, so next-sentence prediction is learnable by a tiny model (at best 0.875: a quarter
    of the other documents share the topic)."""
    import random

    rng = random.Random(0)
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
    topics = ("sun", "sea", "oak", "ice")
    docs = [" ".join(topics[d % 4].capitalize() + " " + " ".join(rng.choice(words) + topics[d % 4]
                                                                for _ in range(rng.randint(4, 9))) + "."
                     for _ in range(rng.randint(4, 8))) for d in range(count)]
    path.write_text("\n".join(docs) + "\n")
    return path


def test_next_sentence_prediction_pretrains_evaluates_and_fine_tunes(tmp_path):
    out = tmp_path / "nsp"
    corpus = [f"data.train_file={_topic_documents(tmp_path / 'topics.txt')}", "data.validation_split_percentage=20",
              "pretrain.objective=mlm+nsp"]
    # At lr 2e-3 seeds 1-4 and 42 reach NSP accuracy 0.86-0.91 (at 1e-3: 0.67-0.87)
    ok(run_cli("pretrain", PRETRAIN, f"output_dir={out}", *corpus, "train.max_steps=200", "train.eval_steps=200",
               "train.learning_rate=2e-3"))
    assert "BertForPreTraining" in (out / "config.json").read_text()
    last = read_jsonl(out / "metrics.jsonl")[-1]
    assert last["eval_nsp_accuracy"] > 0.75 and last["eval_perplexity"] < 25  # chance: 0.5; ~1,000 tokens
    assert last["eval_loss"] == pytest.approx(last["eval_masked_lm_loss"] + 0.1, abs=0.6)  # + the pair loss

    ok(run_cli("evaluate", PRETRAIN, f"output_dir={out}", *corpus, "pretrain.pseudo_perplexity=true"))
    results = json.loads((out / "eval_results.json").read_text())
    assert 1 < results["pseudo_perplexity"] < 25
    assert results["nsp_accuracy"] == last["eval_nsp_accuracy"]  # the same masks and pairs as training's evaluation
    filled = json.loads(ok(run_cli("infer", PRETRAIN, f"output_dir={out}", *corpus, "--input", "-",
                                   input="Sun alphasun bravosun charliesun [MASK].")).stdout)
    assert all(p["token"].endswith("sun") for p in filled["predictions"][0])  # the topic's words, from its MLM head
    ok(run_cli("finetune", FINETUNE, f"output_dir={tmp_path / 'classifier'}", f"model.name_or_path={out}",
               "train.max_steps=5"))


def test_sentence_order_prediction_trains_albert(tmp_path):
    out = tmp_path / "sop"
    albert = ("{model_type: albert, embedding_size: 32, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, "
              "intermediate_size: 128, max_position_embeddings: 64}")
    ok(run_cli("pretrain", PRETRAIN, f"output_dir={out}", f"data.train_file={_topic_documents(tmp_path / 't.txt', 80)}",
               "pretrain.objective=mlm+sop", f"model.config={albert}", "train.max_steps=40", "train.logging_steps=10"))
    lines = read_jsonl(out / "metrics.jsonl")
    train = [line for line in lines if "loss" in line]
    assert train[-1]["loss"] < train[0]["loss"] and "eval_sop_accuracy" in lines[-1]
    assert "AlbertForPreTraining" in (out / "config.json").read_text()
    roberta = "{model_type: roberta, hidden_size: 64, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}"
    result = run_cli("pretrain", PRETRAIN, f"output_dir={tmp_path / 'roberta'}", "pretrain.objective=mlm+sop",
                     f"model.config={roberta}")
    assert result.exit_code == 2 and "no sentence-pair head" in result.output
