"""Tasks, datasets and rewards: ARPO parquet / JSONL loaders, reward functions, the embedded demo tasks."""
