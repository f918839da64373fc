"""Data and training pipeline of the embedded default model: tasks, trajectories, tokenizer, training."""
