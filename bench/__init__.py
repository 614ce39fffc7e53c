"""The benchmark suite of SPEC §6: ``python -m bench`` measures ours and its baselines side by side."""
