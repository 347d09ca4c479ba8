"""The PyTorch engine: `PtEngine` (chat API) over `PtGenerator` (continuous batching on one thread)."""
