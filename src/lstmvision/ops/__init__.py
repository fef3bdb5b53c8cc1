"""Low-level operators (fused recurrences, kernels)."""
