"""One module per CLI command; each exposes `run(cfg, ...)`. `common` holds what the training stages share."""
