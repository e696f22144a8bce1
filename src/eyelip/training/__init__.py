"""The training loop and what feeds it: batches, augmentation, weight averaging, DDP."""
