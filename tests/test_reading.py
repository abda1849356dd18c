"""Data as users have it: headerless tables, CoNLL in a .txt, other encodings, a label inside each line, label
names, a held-out validation split, bad rows named by their line. Each shape on a small file made here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import CONFIGS, REPO, run_cli
from llmkit.config import load_config
from llmkit.data.bad_rows import summary
from llmkit.data.files import read_table
from llmkit.data.formats import LINE, PROBLEM
from llmkit.objectives.token_classification import iob1_starts, iob2

FINETUNE = CONFIGS / "tiny" / "finetune.yaml"
SAMPLE = REPO / "llmkit" / "sample_data" / "sentiment_train.tsv"


def _data(*overrides: str):
    return load_config(FINETUNE, list(overrides)).data


def _sample(count: int) -> list[tuple[str, str]]:
    """(text, label) rows of the built-in sentiment sample."""
    return [tuple(line.split("\t")) for line in SAMPLE.read_text().splitlines()[1:count + 1]]


def _finetune(tmp_path: Path, *overrides: str):
    return run_cli("finetune", FINETUNE, f"output_dir={tmp_path / 'out'}", f"data.data_dir={tmp_path}",
                   "data.test_file=null", "train.max_steps=2", *overrides)


def _results(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "eval_results.json").read_text())


def _id2label(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "config.json").read_text())["id2label"]


# ------------------------------------------------------------------------------------------ headerless tables

def _headerless(tmp_path) -> Path:
    """A CoLA-style TSV without a header: source, label, marker, sentence."""
    path = tmp_path / "in_domain.tsv"
    path.write_text("".join(f"gj04\t{int(label == 'positive')}\t{'' if label == 'positive' else '*'}\t{text}\n"
                            for text, label in _sample(200)))
    return path


@pytest.mark.parametrize("columns", [["data.text_column=3", "data.label_column=1"],
                                     ["data.column_names=[source,label,marker,sentence]", "data.text_column=sentence",
                                      "data.label_column=label"],
                                     ["data.column_names=[source,label,marker,sentence]", "data.text_column=3",
                                      "data.label_column=1"]], ids=["by index", "by names", "names by index"])
def test_a_headerless_file_by_index_or_by_names(columns, tmp_path):
    path = _headerless(tmp_path)
    result = _finetune(tmp_path, f"data.train_file={path}", f"data.validation_file={path}", "data.header=false",
                       *columns, "data.max_eval_samples=20")
    assert result.exit_code == 0, result.output
    assert _id2label(tmp_path) == {"0": "0", "1": "1"}
    assert _results(tmp_path)["num_examples"] == 20


def test_a_headerless_file_read_with_a_header_gets_a_hint(tmp_path):
    path = _headerless(tmp_path)
    result = _finetune(tmp_path, f"data.train_file={path}", "data.validation_file=null")
    assert result.exit_code == 2 and "has no column 'text'" in result.output
    assert "its first row looks like data, not column names: for a file without a header set data.header: false" \
        in result.output
    result = _finetune(tmp_path, f"data.train_file={path}", "data.text_column=3")
    assert result.exit_code == 2 and ("data.text_column: 3 is a column index, which reads a file without a header "
                                      "(header: false)") in result.output


# ------------------------------------------------------------------------------------------ line numbers, bad rows

def test_every_reader_numbers_rows_by_the_files_own_lines(tmp_path):
    """Header and blank lines count, a quoted cell may span lines, and a row of the wrong width is a bad row."""
    (tmp_path / "t.csv").write_text('text,label\n\nfine,1\n"two\nlines",0\nextra,1,field\n')
    rows = read_table(_data(), str(tmp_path / "t.csv"), "data.train_file")
    assert rows[LINE] == [3, 4, 6] and rows["text"] == ["fine", "two\nlines", None]
    assert rows[PROBLEM] == [None, None, "3 fields where the header has 2"]
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": 1}\n\n{"text": "b"\n{"text": "c", "label": 0}\n')
    rows = read_table(_data(), str(tmp_path / "t.jsonl"), "data.train_file")
    assert rows[LINE] == [1, 3, 4] and rows["label"] == [1, None, 0] and rows[PROBLEM][1].startswith("not valid JSON")
    (tmp_path / "t.txt").write_text("one\n\n  \nthree\n")
    assert read_table(_data(), str(tmp_path / "t.txt"), "data.train_file")[LINE] == [1, 4]


def test_a_row_with_an_extra_field_is_skipped_and_reported_by_its_line(tmp_path):
    rows = [f"{text}\t{label}" for text, label in _sample(40)]
    rows[5] += "\tsurplus"
    rows[9] = "\t" + rows[9].split("\t")[-1]
    (tmp_path / "t.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n")
    result = _finetune(tmp_path, "data.train_file=t.tsv", "data.validation_file=t.tsv")
    assert result.exit_code == 2 and "t.tsv line 7: 3 fields where the header has 2 (data.skip_bad_rows=true" \
        in result.output and "Traceback" not in result.output and "ParserError" not in result.output
    result = _finetune(tmp_path, "data.train_file=t.tsv", "data.validation_file=t.tsv", "data.skip_bad_rows=true")
    assert result.exit_code == 0, result.output
    assert ("data.train_file: skipped 2 of 40 rows of " in result.output and "t.tsv: 1 row: 3 fields where the header "
            "has 2 (line 7); 1 row: column 'text' is empty (line 11)\n" in result.output), result.output
    assert _results(tmp_path)["num_examples"] == 38


def test_the_skip_summary_is_grammatical():
    located = [f"line {n}: column 'text' is empty" for n in (52, 60, 71)] + [
        "line 9: label 'x' was not seen in training (the model knows ['a', 'b'])"]
    assert summary(located) == ("3 rows: column 'text' is empty (lines 52, 60, 71); "
                                "1 row: label 'x' was not seen in training (line 9)")
    assert summary([f"row {n}: bad" for n in range(1, 9)]) == "8 rows: bad (rows 1, 2, 3, 4, 5, ...)"


# ------------------------------------------------------------------------------------------ formats, encodings

CONLL_IOB1 = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER
met VBD B-VP O
Anna NNP B-NP I-PER
Lena NNP I-NP B-PER
"""


def test_conll_in_a_txt_file_gets_a_hint_then_reads_with_its_format(tmp_path):
    (tmp_path / "train.txt").write_text(CONLL_IOB1 * 20)
    task = ["finetune.task=token_classification", "data.train_file=train.txt", "data.validation_file=train.txt"]
    result = _finetune(tmp_path, *task)
    assert result.exit_code == 2 and ("has no column 'tokens' (its lines look like CoNLL columns, `token ... tag` "
                                      "with blank lines between sentences: set data.format: conll)") in result.output
    result = _finetune(tmp_path, *task, "data.format=conll")
    assert result.exit_code == 0, result.output
    assert "data.train_file: tags are IOB1 (80 entities start with I-): read as IOB2" in result.output
    assert set(_id2label(tmp_path).values()) == {"O", "B-ORG", "B-MISC", "B-PER", "I-PER"}
    rows = read_table(_data("data.format=conll", "data.tag_field=1"), str(tmp_path / "train.txt"), "data.train_file")
    assert rows[0]["tokens"] == ["EU", "rejects", "German", "call", "."] and rows[0]["tags"][:2] == ["NNP", "VBZ"]
    assert rows[0][LINE] == 3 and rows[1][LINE] == 9 and len(rows) == 40


def test_iob1_tags_become_iob2():
    tags = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-PER"]
    assert iob1_starts(tags) == 3
    assert iob2(tags) == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-PER"]
    assert iob1_starts(iob2(tags)) == 0 and iob2(iob2(tags)) == iob2(tags)


def test_a_latin1_file_with_the_label_inside_each_line(tmp_path):
    """TREC's shape: `COARSE:fine question`, latin-1, with a byte that is not UTF-8, and a line that does not match."""
    questions = [("DESC:manner", "How did serfdom develop in and then leave Russia ?"),
                 ("ENTY:cremat", "What films featured the character Popeye Doyle ?"),
                 ("HUM:ind", "Who was Café Society's favourite \xa3 spender ?")] * 10
    text = "".join(f"{label} {question}\n" for label, question in questions) + "no label here\n"
    (tmp_path / "train.label").write_bytes(text.encode("latin-1"))
    result = _finetune(tmp_path, "data.train_file=train.label", "data.validation_file=null")
    assert result.exit_code == 2 and "unsupported file type .label" in result.output and "data.format" in result.output
    lines = ["data.train_file=train.label", "data.validation_file=train.label", "data.format=lines",
             r"data.line_pattern=^(?P<label>[A-Z]+):\S+ (?P<text>.+)$"]
    result = _finetune(tmp_path, *lines)
    assert result.exit_code == 2 and "train.label line 3: not UTF-8 text (byte b'\\xe9'); set data.encoding" \
        in result.output
    result = _finetune(tmp_path, *lines, "data.encoding=latin-1")
    assert result.exit_code == 2 and ("train.label line 31: does not match data.line_pattern: 'no label here'"
                                      in result.output)
    result = _finetune(tmp_path, *lines, "data.encoding=latin-1", "data.skip_bad_rows=true")
    assert result.exit_code == 0, result.output
    assert set(_id2label(tmp_path).values()) == {"DESC", "ENTY", "HUM"} and _results(tmp_path)["num_examples"] == 30
    rows = read_table(_data(*lines[2:], "data.encoding=latin-1"), str(tmp_path / "train.label"), "data.train_file")
    assert rows[2]["text"] == "Who was Café Society's favourite \xa3 spender ?"


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    (tmp_path / "t.csv").write_bytes("\ufefftext,label\nfine,1\n".encode())
    assert read_table(_data(), str(tmp_path / "t.csv"), "data.train_file").column_names[:2] == ["text", "label"]


# ------------------------------------------------------------------------------------------ labels, splits

@pytest.mark.parametrize("names", ["[negative,positive]", "{0: negative, 1: positive}"], ids=["list", "map"])
def test_label_names_name_index_labels_in_training_results_and_predictions(names, tmp_path):
    (tmp_path / "t.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{int(label == 'positive')}\n"
                                                             for t, label in _sample(60)))
    result = _finetune(tmp_path, "data.train_file=t.tsv", "data.validation_file=t.tsv", f"data.label_names={names}")
    assert result.exit_code == 0, result.output
    assert _id2label(tmp_path) == {"0": "negative", "1": "positive"}
    assert set(_results(tmp_path)["per_class"]) == {"negative", "positive"} and "f1_binary" in _results(tmp_path)
    (tmp_path / "in.txt").write_text("the food was great .\n")
    result = run_cli("infer", FINETUNE, f"output_dir={tmp_path / 'out'}", "--input", tmp_path / "in.txt")
    assert result.exit_code == 0 and json.loads(result.output.splitlines()[-1])["label"] in ("negative", "positive")
    result = _finetune(tmp_path, "data.train_file=t.tsv", "data.validation_file=t.tsv", "data.label_names={1: good}",
                       "train.overwrite_output_dir=true")
    assert result.exit_code == 2 and "t.tsv line 2: label '0' has no name in data.label_names" in result.output


def test_a_stratified_seeded_validation_split_for_fine_tuning(tmp_path):
    rows = _sample(200)
    positives = sum(label == "positive" for _, label in rows)
    (tmp_path / "t.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in rows))
    split = ["data.train_file=t.tsv", "data.validation_file=null", "data.validation_split_percentage=20"]
    result = _finetune(tmp_path, *split)
    assert result.exit_code == 0, result.output
    assert "data.train_file: 40 of 200 rows held out for validation (20%, stratified by label, seed 42)" in result.output
    gold = _results(tmp_path)["per_class"]
    assert _results(tmp_path)["num_examples"] == 40 and gold["positive"]["support"] == round(40 * positives / 200)
    from llmkit.objectives import SequenceClassification
    from llmkit.data.labeled import read_split

    data = load_config(FINETUNE, [f"data.data_dir={tmp_path}", *split]).data
    train, _, _ = read_split(data, "train", SequenceClassification, seed=42)
    held, _, _ = read_split(data, "validation", SequenceClassification, seed=42)
    again, _, _ = read_split(data, "validation", SequenceClassification, seed=42)
    assert len(train) == 160 and held[LINE] == again[LINE] and not set(train[LINE]) & set(held[LINE])
    assert read_split(data, "validation", SequenceClassification, seed=7)[0][LINE] != held[LINE]


def test_f1_binary_scores_the_positive_class():
    from llmkit.metrics import classification_metrics

    gold, predicted = [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]
    assert classification_metrics(gold, predicted, {0: "no", 1: "yes"}, positive=1)["f1_binary"] == pytest.approx(0.5)
    assert classification_metrics(gold, predicted, {0: "no", 1: "yes"}, positive=0)["f1_binary"] == pytest.approx(0.75)
    assert "f1_binary" not in classification_metrics(gold, predicted, {0: "no", 1: "yes"})


def test_evaluate_saves_each_examples_prediction(tmp_path):
    (tmp_path / "t.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{label}\n" for t, label in _sample(30)))
    assert _finetune(tmp_path, "data.train_file=t.tsv", "data.validation_file=t.tsv").exit_code == 0
    result = run_cli("evaluate", FINETUNE, f"output_dir={tmp_path / 'out'}", f"data.data_dir={tmp_path}",
                     "data.validation_file=t.tsv", "--save-predictions")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "out" / "eval_predictions.jsonl").read_text().splitlines()]
    assert [(r["text"], r["gold"]) for r in records] == _sample(30)
    assert all(r["predicted"] in ("positive", "negative") and 0.5 <= r["score"] <= 1 for r in records)
    accuracy = sum(r["gold"] == r["predicted"] for r in records) / len(records)
    assert accuracy == pytest.approx(_results(tmp_path)["accuracy"])
    result = run_cli("evaluate", CONFIGS / "tiny" / "pretrain.yaml", f"output_dir={tmp_path / 'out'}",
                     "--save-predictions")
    assert result.exit_code == 2 and "--save-predictions: per-example predictions are a fine-tuned task's" \
        in result.output
