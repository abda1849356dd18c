"""Data: file readers, tokenizers, pretraining corpora, labelled datasets, batching."""
