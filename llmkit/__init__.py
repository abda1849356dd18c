"""llmkit: pretrain and fine-tune Hugging Face transformer models from YAML configs."""

__version__ = "0.1.0"
