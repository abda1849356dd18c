"""Extractive question answering: SQuAD reading and its checks, windows, post-processing over windows on
hand-made logits, SQuAD's scores on hand-made strings, and the CLI on a tiny model (train, evaluate, infer,
resume bitwise, whole articles held out)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from conftest import CONFIGS, REPO, read_jsonl, run_cli

CONFIG = CONFIGS / "tiny" / "question_answering.yaml"
SAMPLE = REPO / "llmkit" / "sample_data"


def ok(result):
    assert result.exit_code == 0, result.output + (repr(result.exception) if result.exception else "")
    return result


# ---------------------------------------------------------------------------------------------- SQuAD scores

def test_squad_normalisation_drops_case_punctuation_articles_and_spaces():
    from llmkit.objectives.answer_spans import normalize_answer

    assert normalize_answer("  The Denver   Broncos! ") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("Theory") == "theory"  # `the` only as a word


def test_exact_match_and_f1_take_the_best_gold_answer():
    from llmkit.objectives.answer_spans import f1, squad_scores

    assert f1("the cat sat", "a cat sat down") == pytest.approx(2 * 1.0 * (2 / 3) / (1 + 2 / 3))  # p 2/2, r 2/3
    assert f1("dog", "cat") == 0.0
    scores = squad_scores(["Denver Broncos", "cat sat", ""], [["broncos", "the Denver Broncos"], ["a cat"], []])
    # EM: 1, 0, 1 (an unanswerable question's empty answer); F1: 1, 2/3, 1
    assert scores["exact_match"] == pytest.approx(200 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 3)


# ---------------------------------------------------------------------------------------------- post-processing

CONTEXT = "Elias Brandt built the lighthouse in 1874 near the bay."
# Two windows of one context, by characters: [CLS] q [SEP] <tokens> [SEP]; offsets -1 outside the context.
WORDS = [(0, 5), (6, 12), (13, 18), (19, 22), (23, 33), (34, 36), (37, 41), (42, 46), (47, 50), (51, 54)]
OUT = [-1, -1]
WINDOW_A = [OUT, OUT, OUT, *map(list, WORDS[:6]), OUT]  # Elias ... in  (positions 3-8)
WINDOW_B = [OUT, OUT, OUT, *map(list, WORDS[4:]), OUT]  # lighthouse ... bay  (positions 3-8)


def _logits(size: int, peaks: dict[int, float]) -> list[float]:
    return [peaks.get(i, 0.0) for i in range(size)]


def _window(offsets, starts: dict, ends: dict, n_best=5, max_answer_length=30):
    from llmkit.objectives.answer_spans import window_spans

    return window_spans(_logits(len(offsets), starts), _logits(len(offsets), ends), offsets, n_best, max_answer_length)


def test_the_best_span_is_chosen_over_all_windows():
    from llmkit.objectives.answer_spans import best_answer

    a = _window(WINDOW_A, {3: 4.0}, {4: 4.0})  # "Elias Brandt", 8
    b = _window(WINDOW_B, {4: 6.0}, {5: 5.0})  # "in 1874", 11
    answer = best_answer([a, b], CONTEXT, n_best=5)
    assert (answer["answer"], answer["start"], answer["end"]) == ("in 1874", 34, 41)
    assert 0.5 < answer["score"] < 1
    assert best_answer([a], CONTEXT, n_best=5)["answer"] == "Elias Brandt"


def test_a_span_crossing_a_windows_edge_comes_from_the_window_that_holds_it():
    from llmkit.objectives.answer_spans import best_answer

    # "in 1874": window A ends with `in` (position 8), so the end its logits point at is A's closing [SEP];
    # window B holds both tokens. A's higher logits (9 + 9) make no span; B's (5 + 5) answer.
    a = _window(WINDOW_A, {8: 9.0}, {9: 9.0, 4: 1.0})
    b = _window(WINDOW_B, {4: 5.0}, {5: 5.0})
    assert all(start != 34 for _, start, _ in a.spans)  # no span of A starts at `in`: none can end in A
    assert best_answer([a, b], CONTEXT, n_best=5)["answer"] == "in 1874"


def test_max_answer_length_rules_out_long_spans():
    from llmkit.objectives.answer_spans import best_answer

    long = _window(WINDOW_B, {3: 9.0, 7: 1.0}, {8: 9.0, 7: 1.0}, max_answer_length=6)
    assert best_answer([long], CONTEXT, n_best=5)["answer"] == "lighthouse in 1874 near the bay"
    short = _window(WINDOW_B, {3: 9.0, 7: 1.0}, {8: 9.0, 7: 1.0}, max_answer_length=3)
    assert best_answer([short], CONTEXT, n_best=5)["answer"] == "the bay"  # 10: the best span of 3 tokens or less


def test_squad_v2_answers_nothing_when_the_null_score_wins():
    from llmkit.objectives.answer_spans import best_answer

    windows = [_window(WINDOW_A, {0: 5.0, 3: 2.0}, {0: 5.0, 4: 2.0}),
               _window(WINDOW_B, {0: 7.0, 5: 1.0}, {0: 7.0, 6: 1.0})]
    assert windows[0].null_score == 10.0 and windows[1].null_score == 14.0
    empty = best_answer(windows, CONTEXT, n_best=5, version_2=True)  # the smallest null score, 10, beats 4
    assert (empty["answer"], empty["start"], empty["end"]) == ("", -1, -1) and empty["score"] > 0.9
    assert best_answer(windows, CONTEXT, n_best=5, version_2=True, null_threshold=7.0)["answer"] == "Elias Brandt"
    assert best_answer(windows, CONTEXT, n_best=5)["answer"] == "Elias Brandt"  # v1 always answers


def test_training_windows_point_at_the_answer_or_at_cls():
    from llmkit.objectives.question_answering import answer_tokens

    answers = {"text": ["in 1874"], "answer_start": [34]}
    assert answer_tokens(WINDOW_B, answers) == (4, 5)
    assert answer_tokens(WINDOW_A, answers) == (0, 0)  # only its first token is in window A
    assert answer_tokens(WINDOW_A, {"text": [], "answer_start": []}) == (0, 0)


# ---------------------------------------------------------------------------------------------- reading

def test_answers_are_read_in_every_form_and_checked_against_their_offset():
    from llmkit.objectives.question_answering import read_answers

    both = {"text": ["1874"], "answer_start": [37]}
    assert read_answers(both, CONTEXT) == (both, None)
    assert read_answers([{"text": "1874", "answer_start": 37}], CONTEXT) == (both, None)
    assert read_answers('{"text": ["1874"], "answer_start": [37]}', CONTEXT) == (both, None)
    assert read_answers("1874", CONTEXT) == (both, None)  # a plain text, at its first place
    _, problem = read_answers({"text": ["1874"], "answer_start": [30]}, CONTEXT, "q7")
    assert problem == ("an answer is not at its answer_start (question 'q7': '1874' at 30, where the context "
                       "reads 'use ')")
    assert read_answers("1999", CONTEXT, "q8")[1] == "an answer is not in its context (question 'q8': '1999')"


def test_a_wrong_answer_offset_names_the_question_and_skip_bad_rows_drops_it(tmp_path):
    train = json.loads((SAMPLE / "qa_train.json").read_text())
    qa = train["data"][1]["paragraphs"][0]["qas"][0]
    qa["answers"][0]["answer_start"] += 3
    (tmp_path / "train.json").write_text(json.dumps(train))
    args = ["finetune", CONFIG, f"output_dir={tmp_path / 'out'}", f"data.train_file={tmp_path / 'train.json'}",
            "train.max_steps=1", "train.eval_strategy=no"]
    result = run_cli(*args)
    assert result.exit_code == 2, result.output
    assert f"row 7: an answer is not at its answer_start (question {qa['id']!r}: {qa['answers'][0]['text']!r} at " \
        in result.output and "data.skip_bad_rows=true" in result.output
    result = ok(run_cli(*args, "data.skip_bad_rows=true"))
    assert "skipped 1 of 23 rows" in result.output
    assert "1 row: an answer is not at its answer_start (row 7)" in result.output


def test_malformed_squad_json_names_the_place(tmp_path):
    from llmkit.config import load_config
    from llmkit.data.labeled import read_split
    from llmkit.errors import LlmkitError
    from llmkit.objectives.question_answering import QuestionAnswering

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [{"id": "x"}]}]}]}))
    cfg = load_config(CONFIG, [f"data.train_file={bad}"])
    with pytest.raises(LlmkitError, match=r"data.train_file: .*bad.json: data\[0\].paragraphs\[0\].qas\[0\] has no "
                                          "'question'"):
        read_split(cfg.data, "train", QuestionAnswering)


def test_validation_holds_out_whole_articles(tmp_path):
    from llmkit.config import load_config
    from llmkit.data.labeled import read_split
    from llmkit.objectives.question_answering import QuestionAnswering

    cfg = load_config(CONFIG, ["data.validation_file=null", "data.validation_split_percentage=40",
                               "data.validation_group_column=title"])
    train, _, _ = read_split(cfg.data, "train", QuestionAnswering, None, cfg.seed)
    validation, _, _ = read_split(cfg.data, "validation", QuestionAnswering, None, cfg.seed)
    assert len(train) + len(validation) == 23 and len(set(validation["title"])) == 2  # 40% of 5 articles
    assert not set(train["title"]) & set(validation["title"])


def test_long_contexts_become_overlapping_windows_that_find_their_answer(tmp_path):
    from transformers import BertTokenizerFast

    from llmkit.config import load_config
    from llmkit.data.labeled import read_split
    from llmkit.objectives.question_answering import QuestionAnswering

    words = sorted({w for line in (SAMPLE / "qa_train.json").read_text().split() for w in
                    "".join(c if c.isalnum() else " " for c in line.lower()).split()})
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, ",", "."]) + "\n")
    tokenizer = BertTokenizerFast(str(vocab))
    cfg = load_config(CONFIG, ["data.max_seq_length=32", "data.doc_stride=8"])
    rows, _, _ = read_split(cfg.data, "train", QuestionAnswering, None, cfg.seed)
    task = QuestionAnswering(cfg, tokenizer, {0: "start", 1: "end"})
    windows = task.encode(rows)
    assert len(windows) > len(rows) and max(len(ids) for ids in windows["input_ids"]) == cfg.data.max_seq_length
    assert sorted(set(windows["example_index"])) == list(range(len(rows)))
    found = set()
    for window in windows:
        start, end = window["start_positions"], window["end_positions"]
        if start:
            row = rows[window["example_index"]]
            text = row["context"][window["offset_mapping"][start][0]:window["offset_mapping"][end][1]]
            assert text == row["answers"]["text"][0]
            found.add(window["example_index"])
    assert found == set(range(len(rows)))  # every answer lies whole in some window


# ---------------------------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("qa") / "run"
    ok(run_cli("finetune", CONFIG, f"output_dir={out}", "train.logging_steps=1"))
    return out


def test_validate_plans_the_steps_of_every_window(tmp_path):
    """23 training questions are 45 windows of context: training takes 6 steps of 8 an epoch, and so does the plan."""
    facts = json.loads(ok(run_cli("validate", CONFIG, f"output_dir={tmp_path}", "--json")).output)[0]["facts"]
    assert facts["rows"].startswith("train 23 rows")
    assert facts["steps"] == "60 (6 per epoch, 10.00 epochs)"


def test_training_lowers_the_loss_and_scores_squad_metrics(trained):
    losses = [line["loss"] for line in read_jsonl(trained / "metrics.jsonl") if "loss" in line]
    assert losses[0] > 3.0 and sum(losses[-5:]) / 5 < 0.5 * losses[0]
    results = json.loads((trained / "eval_results.json").read_text())
    assert results["num_questions"] == 6 and results["num_examples"] > 6  # windows
    assert 0 <= results["exact_match"] <= results["f1"] <= 100


def test_evaluate_saves_a_record_per_question(trained):
    ok(run_cli("evaluate", CONFIG, f"output_dir={trained}", "--save-predictions"))
    records = read_jsonl(trained / "eval_predictions.jsonl")
    assert [r["id"] for r in records] == [f"dev-{i}" for i in range(1, 7)]
    assert set(records[0]) == {"id", "question", "gold", "predicted", "score"} and records[0]["gold"] == ["1820"]


def test_infer_writes_an_answer_span_per_question(trained, tmp_path):
    context = "The clock tower of Lenby was finished in 1820. A watchmaker named Otto Fenn repairs the clock."
    lines = [{"question": "Who repairs the clock?", "context": context},
             {"question": "When was the tower finished?", "context": " ".join([context] * 4)}]  # several windows
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    ok(run_cli("infer", CONFIG, f"output_dir={trained}", "--input", tmp_path / "q.jsonl", "--output",
               tmp_path / "p.jsonl"))
    predictions = read_jsonl(tmp_path / "p.jsonl")
    assert [set(p) for p in predictions] == [{"question", "answer", "score", "start", "end"}] * 2
    for line, p in zip(lines, predictions):
        assert line["context"][p["start"]:p["end"]] == p["answer"] and 0 < p["score"] <= 1


def test_the_model_loads_in_plain_transformers(trained):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(trained)
    model = AutoModelForQuestionAnswering.from_pretrained(trained)
    outputs = model(**tokenizer("Who?", "Otto did.", return_tensors="pt"))
    assert outputs.start_logits.shape == outputs.end_logits.shape


def test_sigkill_then_resume_is_bitwise_the_uninterrupted_run(tmp_path, monkeypatch):
    import test_resume
    from test_resume import assert_same_run, finish, kill_after, llmkit

    steps = ["train.max_steps=30", "train.save_strategy=steps", "train.save_steps=10", "train.eval_strategy=steps",
             "train.eval_steps=10", "train.save_total_limit=null"]
    monkeypatch.setitem(test_resume.RUNS, "finetune", (CONFIG, steps))
    finish(llmkit("finetune", tmp_path / "baseline"))
    out = tmp_path / "run"
    proc = llmkit("finetune", out)
    kill_after(proc, out / "checkpoint-20")
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not (out / "model.safetensors").exists()
    assert "at step 20" in finish(llmkit("finetune", out, "train.resume_from_checkpoint=latest"))
    assert_same_run(out, tmp_path / "baseline")
