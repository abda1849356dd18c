"""Every fine-tuning task and method through the CLI, on tiny models and data derived from the sample."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, REPO, read_jsonl, run_cli, write_config

FINETUNE = CONFIGS / "tiny" / "finetune.yaml"
PRETRAIN = CONFIGS / "tiny" / "pretrain.yaml"
SAMPLE = REPO / "llmkit" / "sample_data"
DOMAINS = {"restaurant": ["food", "service", "pasta", "waiter", "soup", "dessert", "coffee", "wine", "pizza", "staff",
                          "menu", "bread", "steak", "salad"],
           "hotel": ["room", "bed", "view", "breakfast", "pool", "reception", "location", "shower", "hotel", "lobby"],
           "film": ["movie", "plot", "acting", "soundtrack", "ending", "script", "director", "cast", "dialogue",
                    "camera"]}
ASPECT_WORDS = {w for words in DOMAINS.values() for w in words} | {"list", "work"}


def _reviews(split: str, limit: int | None = None) -> list[tuple[str, str]]:
    lines = (SAMPLE / f"sentiment_{split}.tsv").read_text().splitlines()[1:limit and limit + 1]
    return [tuple(line.split("\t")) for line in lines]


def _domain(text: str) -> str:
    words = set(text.split())
    return next(d for d, names in DOMAINS.items() if words & set(names))


def ok(result):
    assert result.exit_code == 0, result.output + (repr(result.exception) if result.exception else "")
    return result


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """jsonl / CoNLL files for regression, multi-label and NER, from the sample reviews."""
    root = tmp_path_factory.mktemp("tasks")
    for split, limit in (("train", 1200), ("dev", 150)):
        rows = _reviews(split, limit)
        with (root / f"reg_{split}.jsonl").open("w") as f:
            for text, label in rows:
                f.write(json.dumps({"text": text, "score": 4.0 if label == "positive" else 1.0}) + "\n")
        with (root / f"multi_{split}.jsonl").open("w") as f:
            for text, label in rows:
                f.write(json.dumps({"text": text, "label": [label, _domain(text)]}) + "\n")
        lines = []
        for n, (text, _) in enumerate(rows):
            words = text.split()
            for i, word in enumerate(words):
                aspect = word in ASPECT_WORDS and words[i - 1] in {"the", "our"} | ASPECT_WORDS
                tag = ("I-ASPECT" if words[i - 1] in ASPECT_WORDS else "B-ASPECT") if aspect else "O"
                lines.append(f"{word}\t{tag}")
            lines.append("\t" if n % 2 else "")  # WNUT-17 style: a lone tab or an empty line between sentences
        (root / f"ner_{split}.conll").write_text("\n".join(lines) + "\n")
    return root


def _finetune(data: Path, out: Path, *overrides: str):
    return ok(run_cli("finetune", FINETUNE, f"output_dir={out}", f"data.data_dir={data}", "data.test_file=null",
                      "train.num_train_epochs=3", *overrides))


def test_regression(data, tmp_path):
    task = ["finetune.task=regression", "data.train_file=reg_train.jsonl", "data.validation_file=reg_dev.jsonl",
            "data.label_column=score", "train.metric_for_best_model=pearson"]
    _finetune(data, tmp_path, *task)
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["pearson"] > 0.8 and results["spearman"] > 0.6 and results["loss"] == pytest.approx(results["mse"], rel=1e-4)
    assert json.loads((tmp_path / "config.json").read_text())["problem_type"] == "regression"
    ok(run_cli("infer", FINETUNE, f"output_dir={tmp_path}", *task[:1], "--input", "-", "--output", tmp_path / "p.jsonl",
               input="the soup was delicious , we loved it .\nthe room was dirty , never again .\n"))
    good, bad = read_jsonl(tmp_path / "p.jsonl")
    assert good["score"] > bad["score"] + 1.5


def test_multi_label(data, tmp_path):
    task = ["finetune.task=multi_label_classification", "data.train_file=multi_train.jsonl",
            "data.validation_file=multi_dev.jsonl", "finetune.threshold=0.4"]
    _finetune(data, tmp_path, *task, "train.num_train_epochs=5")
    results = json.loads((tmp_path / "eval_results.json").read_text())
    f1 = {label: metrics["f1"] for label, metrics in results["per_class"].items()}
    assert set(f1) == {"film", "hotel", "negative", "positive", "restaurant"}
    # The 2-layer model from scratch learns the sentiment, the domain or both, by seed (25 runs over seeds and
    # settings: micro F1 0.63, 0.80 or 0.95+). The label priors alone give 0.5 (both sentiments, no domain).
    assert results["f1_micro"] > 0.6
    assert min(f1["negative"], f1["positive"]) > 0.9 or min(f1["film"], f1["hotel"], f1["restaurant"]) > 0.9
    ok(run_cli("infer", FINETUNE, f"output_dir={tmp_path}", *task, "--input", "-", "--output", tmp_path / "p.jsonl",
               input="the pool was lovely , highly recommended .\n"))
    prediction = read_jsonl(tmp_path / "p.jsonl")[0]
    assert set(prediction["scores"]) == set(f1)
    assert set(prediction["labels"]) == {label for label, score in prediction["scores"].items() if score >= 0.4}
    assert {"positive", "hotel"} & set(prediction["labels"])  # whichever group was learnt


def test_multi_label_from_separated_strings(tmp_path):
    (tmp_path / "m.csv").write_text("text,label\n" + 'the soup was great,"food|good"\nthe bed was hard,bed\n' * 20)
    _finetune(tmp_path, tmp_path / "out", "finetune.task=multi_label_classification", "data.train_file=m.csv",
              "data.validation_file=null", "data.label_separator=|", "train.num_train_epochs=1")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert sorted(config["label2id"]) == ["bed", "food", "good"]


def test_token_classification_from_conll(data, tmp_path):
    task = ["finetune.task=token_classification", "data.train_file=ner_train.conll", "data.validation_file=ner_dev.conll",
            "train.metric_for_best_model=f1"]
    _finetune(data, tmp_path, *task)
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["f1"] > 0.8 and "ASPECT" in results["per_class"]
    ok(run_cli("infer", FINETUNE, f"output_dir={tmp_path}", *task, "--input", "-", "--output", tmp_path / "p.jsonl",
               input="honestly , the wine list was great .\n"))
    prediction = read_jsonl(tmp_path / "p.jsonl")[0]
    assert prediction["tokens"][3:5] == ["wine", "list"] and prediction["tags"][3:5] == ["B-ASPECT", "I-ASPECT"]

    # WNUT-17's test file tags some tokens twice ("B-x,B-y"): refused by default, first tag on request.
    lines = (data / "ner_dev.conll").read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.endswith("B-ASPECT"))
    lines[first] += ",I-ASPECT"
    (tmp_path / "multi.conll").write_text("\n".join(lines) + "\n")
    test = [f"output_dir={tmp_path}", f"data.data_dir={data}", *task, f"data.test_file={tmp_path / 'multi.conll'}",
            "--split", "test"]
    refused = run_cli("evaluate", FINETUNE, *test)
    assert refused.exit_code == 2 and "'B-ASPECT,I-ASPECT' was not seen in training" in refused.output
    ok(run_cli("evaluate", FINETUNE, *test, "data.multi_tag_separator=,"))
    scored = json.loads((tmp_path / "test_results.json").read_text())
    assert scored["num_examples"] == 150 and scored["f1"] > 0.8


def test_words_without_sub_tokens_or_cut_off_count_as_o():
    """Gold sequences are scored whole: unseen words are predicted O, never dropped."""
    import torch

    from llmkit.objectives import TokenClassification

    id2label = {0: "O", 1: "B-X"}

    class Model:
        def __call__(self, **inputs):  # predicts B-X everywhere
            return type("Out", (), {"logits": torch.tensor([[[0.0, 1.0]] * 4])})()

    batch = {"input_ids": torch.zeros(1, 4, dtype=torch.long), "attention_mask": torch.ones(1, 4, dtype=torch.long),
             # [CLS] w0 w2 [SEP]: word 1 has no sub-token, word 3 was truncated away
             "word_ids": torch.tensor([[-1, 0, 2, -1]]), "word_labels": torch.tensor([[1, 1, 0, 1]])}
    from llmkit.config import load_config

    cfg = load_config(FINETUNE, ["finetune.task=token_classification"])
    [(predicted, gold)] = TokenClassification(cfg, None, id2label).eval_outputs(Model(), batch)
    assert gold == ["B-X", "B-X", "O", "B-X"] and predicted == ["B-X", "O", "B-X", "O"]


def test_a_conll_line_with_the_wrong_number_of_fields(tmp_path):
    (tmp_path / "bad.conll").write_text("the\tO\nsoup\tB-ASPECT\n\nwas great\tO\textra\n")
    result = run_cli("finetune", FINETUNE, f"output_dir={tmp_path / 'out'}", f"data.data_dir={tmp_path}",
                     "finetune.task=token_classification", "data.train_file=bad.conll", "data.validation_file=null")
    assert result.exit_code == 2, result.output
    assert "bad.conll line 4: 4 fields where the file's token lines have 2 (data.skip_bad_rows=true" in result.output


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """An encoder whose features already tell the sample's sentiment apart: fully fine-tuned, then saved
    without its head. (A tiny MLM-pretrained encoder's frozen features carry no sentiment, so nothing
    trained on top of them could be seen to learn.) Each method then trains a fresh head on it."""
    from transformers import AutoModel, AutoTokenizer

    tuned, base = tmp_path_factory.mktemp("tuned"), tmp_path_factory.mktemp("base")
    ok(run_cli("finetune", FINETUNE, f"output_dir={tuned}", "train.num_train_epochs=2", "train.save_strategy=no"))
    AutoModel.from_pretrained(tuned).save_pretrained(base)
    AutoTokenizer.from_pretrained(tuned).save_pretrained(base)
    return base


def _sentiment(pretrained: Path, out: Path, *overrides: str):
    """600 examples, two epochs, at the method's default learning rate."""
    return ok(run_cli("finetune", FINETUNE, f"output_dir={out}", f"model.name_or_path={pretrained}",
                      "train.learning_rate=null", "data.max_train_samples=600", "train.num_train_epochs=2",
                      "train.logging_steps=5", *overrides))


def _accuracy(out: Path) -> float:
    return json.loads((out / "eval_results.json").read_text())["accuracy"]


def test_freeze_trains_only_the_head_and_top_layers(pretrained, tmp_path):
    from safetensors.torch import load_file

    result = _sentiment(pretrained, tmp_path, "finetune.method=freeze", "finetune.unfreeze_top_layers=1")
    assert _accuracy(tmp_path) > 0.85
    words = result.output.split("parameters")[1].split()  # "12,345 trainable of 345,678"
    trainable, total = int(words[0].replace(",", "")), int(words[3].replace(",", ""))
    assert 0 < trainable < total / 2
    before, after = load_file(pretrained / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    name = "encoder.layer.{}.attention.self.query.weight"  # the base is a bare BertModel; `bert.` in the classifier
    assert (after["bert." + name.format(0)] == before[name.format(0)]).all()  # frozen
    assert not (after["bert." + name.format(1)] == before[name.format(1)]).all()  # the top layer trained


def test_each_method_has_its_own_default_learning_rate():
    from llmkit.config import load_config

    rates = {m: load_config(FINETUNE, ["train.learning_rate=null", f"finetune.method={m}"]).train.learning_rate
             for m in ("full", "freeze", "lora", "prompt")}
    assert rates == {"full": 5e-5, "freeze": 1e-3, "lora": 1e-3, "prompt": 1e-2}


def test_lora_saves_an_adapter_that_evaluate_infer_and_merge_use(pretrained, tmp_path):
    _sentiment(pretrained, tmp_path, "finetune.method=lora", "finetune.merge_adapter=true")
    assert (tmp_path / "adapter_config.json").exists() and not (tmp_path / "model.safetensors").exists()
    accuracy = _accuracy(tmp_path)
    assert accuracy > 0.85
    result = ok(run_cli("evaluate", FINETUNE, f"output_dir={tmp_path}", f"model.name_or_path={pretrained}"))
    assert json.loads(result.output[result.output.index("{"):])["accuracy"] == pytest.approx(accuracy)
    ok(run_cli("infer", FINETUNE, f"output_dir={tmp_path}", f"model.name_or_path={pretrained}", "--input", "-",
               "--output", tmp_path / "p.jsonl", input="the soup was delicious , we loved it .\n"))
    from transformers import pipeline

    merged = pipeline("text-classification", model=str(tmp_path / "merged"))("the soup was delicious , we loved it .")
    adapter = read_jsonl(tmp_path / "p.jsonl")[0]
    assert merged[0]["label"] == adapter["label"] and merged[0]["score"] == pytest.approx(adapter["score"], abs=1e-4)


@pytest.mark.parametrize("kind", ["prompt_tuning", "prefix_tuning"])
def test_prompt_tuning_trains_virtual_tokens(kind, pretrained, tmp_path):
    _sentiment(pretrained, tmp_path, "finetune.method=prompt", f"finetune.prompt.type={kind}",
               "finetune.prompt.num_virtual_tokens=8", "data.max_seq_length=56")
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == kind.upper()
    results = json.loads((tmp_path / "eval_results.json").read_text())
    assert results["num_examples"] == 300 and results["accuracy"] > 0.75


TINY_CLASSIFIERS = {  # an encoder and two decoders, as *ForSequenceClassification from a config
    "bert": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 2, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 1},
    "llama": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
              "intermediate_size": 64, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 1},
}


@pytest.mark.parametrize("model_type", TINY_CLASSIFIERS)
def test_prefix_tuning_trains_encoders_and_decoders(model_type, tmp_path):
    """Prefix tuning on the installed transformers (which names the cache argument `cache`): the loss falls,
    only the prefix trains, and the saved adapter loads in plain PEFT with the same outputs."""
    import torch
    from peft import PeftModel, PrefixTuningConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from llmkit.modeling import accept_past_key_values

    config = AutoConfig.for_model(model_type, vocab_size=100, num_labels=2, **TINY_CLASSIFIERS[model_type])
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_config(config)
    base.save_pretrained(tmp_path / "base")
    ids, labels = torch.randint(3, 100, (4, 10)), torch.tensor([0, 1, 0, 1])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        untuned = base(input_ids=ids, attention_mask=mask).logits
    names = [type(base).__name__, type(base.base_model).__name__]
    accept_past_key_values(base)
    assert [type(base).__name__, type(base.base_model).__name__] == names  # configs save the same architectures
    model = get_peft_model(base, PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4))
    prefix = model.prompt_encoder["default"].embedding.weight
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(20):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        assert prefix.grad.abs().sum() > 0
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    model.eval()
    with torch.no_grad():
        tuned = model(input_ids=ids, attention_mask=mask).logits
    assert (tuned - untuned).abs().max() > 1e-3
    model.save_pretrained(tmp_path / "adapter")

    fresh = AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    accept_past_key_values(fresh)
    loaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    assert torch.equal(loaded.prompt_encoder["default"].embedding.weight, prefix.detach())
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids, attention_mask=mask).logits, tuned, atol=1e-6)


def test_prefix_tuning_refuses_a_model_without_a_cache(pretrained, tmp_path):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    AutoModel.from_config(AutoConfig.for_model("deberta-v2", vocab_size=len(tokenizer), hidden_size=32,
                                               num_hidden_layers=1, num_attention_heads=2,
                                               intermediate_size=64)).save_pretrained(tmp_path / "deberta")
    tokenizer.save_pretrained(tmp_path / "deberta")
    result = run_cli("finetune", FINETUNE, f"output_dir={tmp_path / 'out'}", f"model.name_or_path={tmp_path / 'deberta'}",
                     "finetune.method=prompt", "finetune.prompt.type=prefix_tuning", "data.max_train_samples=64")
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        "error: finetune.prompt.type: prefix_tuning puts trained keys and values into each layer's cache, and "
        "DebertaV2ForSequenceClassification takes no cache argument; use prompt_tuning")
    assert not (tmp_path / "out").exists()


def test_prompt_adapters_cannot_be_merged():
    result = run_cli("finetune", FINETUNE, "output_dir=x", "finetune.method=prompt", "finetune.merge_adapter=true")
    assert result.exit_code == 2 and "prompt and prefix adapters cannot be merged" in result.output


def test_lora_run_resumes_exactly(pretrained, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from llmkit.objectives import SequenceClassification

    common = ["finetune.method=lora", "train.learning_rate=0.01", "train.max_steps=8", "train.save_steps=4", "train.logging_steps=1",
              "train.eval_strategy=no", "train.save_strategy=steps"]
    _sentiment(pretrained, tmp_path / "baseline", *common)
    real, calls = SequenceClassification.loss, {"n": 0}

    def loss(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # a crash after checkpoint-4
        return real(self, model, batch)

    monkeypatch.setattr(SequenceClassification, "loss", loss)
    result = run_cli("finetune", FINETUNE, f"output_dir={tmp_path / 'run'}", f"model.name_or_path={pretrained}",
                     "data.max_train_samples=600", *common)
    assert result.exit_code == 130
    monkeypatch.setattr(SequenceClassification, "loss", real)
    _sentiment(pretrained, tmp_path / "run", *common, "train.resume_from_checkpoint=latest")
    losses = lambda d: [x["loss"] for x in read_jsonl(d / "metrics.jsonl") if "loss" in x]  # noqa: E731
    assert losses(tmp_path / "run") == losses(tmp_path / "baseline")
    a = load_file(tmp_path / "run" / "adapter_model.safetensors")
    b = load_file(tmp_path / "baseline" / "adapter_model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)


def _multi_task_config(data: Path, path: Path, **train) -> Path:
    """Sentiment (the sample's TSV), a 1-5 score and aspect tags: three tasks on one encoder."""
    write_config(path, "finetune", data={"data_dir": str(data), "text_column": "text", "max_seq_length": 64},
                        finetune={"method": "full", "tasks": {
                            "sentiment": {"proportion": 1, "data": {
                                "data_dir": str(SAMPLE), "train_file": "sentiment_train.tsv",
                                "validation_file": "sentiment_dev.tsv"}},
                            "score": {"task": "regression", "proportion": 1, "data": {
                                "train_file": "reg_train.jsonl", "validation_file": "reg_dev.jsonl",
                                "label_column": "score"}},
                            "aspects": {"task": "token_classification", "proportion": 2, "data": {
                                "train_file": "ner_train.conll", "validation_file": "ner_dev.conll"}}}},
                        train={"num_train_epochs": 2, "logging_steps": 5, **train})
    raw = yaml.safe_load(path.read_text())
    del raw["finetune"]["task"]
    path.write_text(yaml.safe_dump(raw))
    return path


def test_multi_task_shares_one_encoder_and_reports_each_task(data, tmp_path):
    from safetensors.torch import load_file
    from transformers import pipeline

    config = _multi_task_config(data, tmp_path / "mt.yaml", save_strategy="no")
    out = tmp_path / "out"
    trained = ok(run_cli("finetune", config, f"output_dir={out}"))
    results = json.loads((out / "eval_results.json").read_text())
    assert results["sentiment_accuracy"] > 0.8 and results["score_pearson"] > 0.7 and results["aspects_f1"] > 0.7
    losses = [results[f"{task}_loss"] for task in ("sentiment", "score", "aspects")]
    assert results["loss"] == pytest.approx(sum(losses) / 3)
    # Each task is a complete model; all hold the same encoder.
    weights = {task: load_file(out / task / "model.safetensors") for task in ("sentiment", "score", "aspects")}
    encoder = [k for k in weights["sentiment"] if k.startswith(("bert.embeddings.", "bert.encoder."))]
    assert encoder and all((weights[t][k] == weights["sentiment"][k]).all() for t in weights for k in encoder)
    classify = pipeline("text-classification", model=str(out / "sentiment"))
    assert classify("the soup was delicious !")[0]["label"] == "positive"
    # Steps are drawn 1 : 1 : 2.
    shares = {task: int(share)
              for task, share in re.findall(r"examples \((\w+)\).*?(\d+)% of the steps", trained.output)}
    assert set(shares) == {"sentiment", "score", "aspects"} and 44 <= shares["aspects"] <= 56
    # evaluate and infer read the same task folders.
    ok(run_cli("evaluate", config, f"output_dir={out}"))
    assert json.loads((out / "eval_results.json").read_text())["aspects_f1"] == pytest.approx(results["aspects_f1"])
    ok(run_cli("infer", config, f"output_dir={out}", "--task", "score", "--input", "-",
               "--output", tmp_path / "p.jsonl", input="the soup was delicious , we loved it .\nthe room was dirty , never again .\n"))
    good, bad = read_jsonl(tmp_path / "p.jsonl")
    assert good["score"] > bad["score"] + 1
    missing = run_cli("infer", config, f"output_dir={out}", "--input", "-", input="x\n")
    assert missing.exit_code == 2 and "pick one" in missing.output and "aspects, score, sentiment" in missing.output


def test_multi_task_config_errors(data, tmp_path):
    config = _multi_task_config(data, tmp_path / "mt.yaml")
    typo = run_cli("finetune", config, "output_dir=x", "finetune.tasks.score.data.lable_column=y")
    assert typo.exit_code == 2 and "did you mean finetune.tasks.score.data.label_column" in typo.output
    both = run_cli("finetune", config, "output_dir=x", "finetune.task=regression")
    assert both.exit_code == 2 and "not both" in both.output
    lora = run_cli("finetune", config, "output_dir=x", "finetune.method=lora")
    assert lora.exit_code == 2 and "use full or freeze" in lora.output
    missing = run_cli("finetune", config, f"output_dir={tmp_path / 'out'}",
                      "finetune.tasks.score.data.train_file=no.jsonl")
    assert missing.exit_code == 2 and "finetune.tasks.score.data.train_file" in missing.output


def test_multi_task_run_resumes_exactly(data, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from llmkit.multitask import TaskForward

    config = _multi_task_config(data, tmp_path / "mt.yaml", max_steps=12, save_steps=6, save_strategy="steps",
                                eval_strategy="no", logging_steps=1)
    ok(run_cli("finetune", config, f"output_dir={tmp_path / 'baseline'}"))
    real, calls = TaskForward.__call__, {"n": 0}

    def forward(self, **inputs):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt  # a crash after checkpoint-6
        return real(self, **inputs)

    monkeypatch.setattr(TaskForward, "__call__", forward)
    assert run_cli("finetune", config, f"output_dir={tmp_path / 'run'}").exit_code == 130
    monkeypatch.setattr(TaskForward, "__call__", real)
    ok(run_cli("finetune", config, f"output_dir={tmp_path / 'run'}", "train.resume_from_checkpoint=latest"))
    losses = lambda d: [x["loss"] for x in read_jsonl(d / "metrics.jsonl") if "loss" in x]  # noqa: E731
    assert losses(tmp_path / "run") == losses(tmp_path / "baseline") and len(losses(tmp_path / "run")) == 12
    for task in ("sentiment", "score", "aspects"):
        a = load_file(tmp_path / "run" / task / "model.safetensors")
        b = load_file(tmp_path / "baseline" / task / "model.safetensors")
        assert all((a[k] == b[k]).all() for k in a)
