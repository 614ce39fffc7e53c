"""spearlet: the Spearlet function service (FunctionService and ObjectService over a KV store)."""

__version__ = "0.1.0"
