"""The benchmark suite (docs/performance.md): ``python -m bench`` measures ours and its baselines side by
side."""
