"""Run reports straight from a store, no server running: ``spearlet report`` (HTML or Markdown) and
``spearlet diff`` (a per-function comparison of two runs, or of a run and a baseline file)."""
