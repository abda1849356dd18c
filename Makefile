# make install | demo | test | lock | bench | clean        (everything runs from the repo's own .venv)
VENV   := .venv
PY     := $(VENV)/bin/python
LLMKIT := $(VENV)/bin/llmkit
DEMO   := runs/demo
LOCK   := constraints.txt
# torch's CPU build. Where pip's index has only CUDA wheels for Linux (PyPI), add PyTorch's CPU index:
#   make install TORCH_INDEX=--extra-index-url=https://download.pytorch.org/whl/cpu
TORCH       := 2.13.0
TORCH_INDEX :=
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := true

.PHONY: install demo test lock bench clean

install: $(VENV)/.installed

# Exactly the tested set: every package, direct and transitive, pinned by $(LOCK). torch goes in first, as the
# CPU build; a loose requirement would pull CUDA wheels.
$(VENV)/.installed: pyproject.toml $(LOCK)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c $(LOCK) --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) $(TORCH_INDEX) torch==$(TORCH)
	$(PY) -m pip install -q -c $(LOCK) -e '.[dev]'
	touch $@

# Re-resolve against the newest releases that pyproject.toml's ranges allow, write them to $(LOCK), run the suite.
# Review and commit the new $(LOCK) when it passes (git diff $(LOCK) shows what moved).
lock:
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_INDEX) torch==$(TORCH)
	$(PY) -m pip install -q --upgrade -e '.[dev]'
	{ echo "# The tested dependency set, read by make install (pip -c). Regenerate with: make lock"; \
	  echo "# Resolved $$(date -u +%Y-%m-%d) on Python $$($(PY) -c 'import platform; print(platform.python_version())')"; \
	  $(PY) -m pip freeze --all --exclude-editable | grep -v '^#' | sed -E 's/^torch==([^+]*)\+.*/torch==\1/'; \
	} > $(LOCK)
	touch $(VENV)/.installed
	$(PY) -m pytest -q

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
	@echo "  model card and report: $(DEMO)/classifier/README.md, $(DEMO)/classifier/report.md (plots in plots/)"
	@echo "  predictions:           $(DEMO)/predictions.jsonl"

test: install
	$(PY) -m pytest -q

# llmkit against the Hugging Face peers (Trainer as run_mlm / run_glue set it up, pipeline()), side by side;
# JSON lines on stdout, a row per benchmark in benchmarks/RESULTS.md. Needs ../shared/data (skips what is missing).
bench: install
	$(PY) benchmarks/bench.py

clean:
	rm -rf $(VENV) runs .pytest_cache
