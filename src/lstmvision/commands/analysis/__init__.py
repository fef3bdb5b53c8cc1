"""The analyses of the papers: resolution sweep, effective receptive field, robustness, memory."""
