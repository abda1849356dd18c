# make install | demo | test | bench | clean        (everything runs from the repo's own .venv)
VENV   := .venv
PY     := $(VENV)/bin/python
LLMKIT := $(VENV)/bin/llmkit
DEMO   := runs/demo
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := true

.PHONY: install demo test bench clean

install: $(VENV)/.installed

# torch first, pinned to the CPU build on this machine's disk; a loose requirement would pull CUDA wheels.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The whole pipeline on the built-in sample: preprocess -> pretrain -> finetune -> evaluate -> infer.
demo: install
	$(LLMKIT) preprocess configs/tiny/pretrain.yaml
	$(LLMKIT) pretrain configs/tiny/pretrain.yaml output_dir=$(DEMO)/mlm train.overwrite_output_dir=true
	$(LLMKIT) finetune configs/tiny/finetune.yaml output_dir=$(DEMO)/classifier model.name_or_path=$(DEMO)/mlm train.overwrite_output_dir=true
	$(LLMKIT) evaluate configs/tiny/finetune.yaml output_dir=$(DEMO)/classifier --split test
	printf 'the food was really delicious , we loved it .\nthe service was not friendly .\nthe acting was not bad , worth every penny .\n' > $(DEMO)/texts.txt
	$(LLMKIT) infer configs/tiny/finetune.yaml output_dir=$(DEMO)/classifier --input $(DEMO)/texts.txt --output $(DEMO)/predictions.jsonl
	cat $(DEMO)/predictions.jsonl
	@echo
	@echo "demo done:"
	@echo "  pretrained masked LM:  $(DEMO)/mlm/"
	@echo "  fine-tuned classifier: $(DEMO)/classifier/   (metrics: $(DEMO)/classifier/metrics.jsonl, test_results.json)"
	@echo "  predictions:           $(DEMO)/predictions.jsonl"

test: install
	$(PY) -m pytest -q

# llmkit against the Hugging Face peers (Trainer as run_mlm / run_glue set it up, pipeline()), side by side;
# JSON lines on stdout, a row per benchmark in benchmarks/RESULTS.md. Needs ../shared/data (skips what is missing).
bench: install
	$(PY) benchmarks/bench.py

clean:
	rm -rf $(VENV) runs .pytest_cache
