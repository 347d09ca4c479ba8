"""Front ends of `swift infer`: interactive chat, pipes, and datasets."""
