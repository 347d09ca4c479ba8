"""swift.megatron: Swift on Megatron-Core (megatron.core is imported only when a run starts)."""
