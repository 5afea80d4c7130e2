"""Request and response models: the HTTP contract, and nothing else."""
