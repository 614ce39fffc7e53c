"""Live notebook views of a spearlet: the monitoring panel, execution watches and progress bars.

Each view splits into what it shows (a snapshot fetched on the SDK's runtime loop) and how it shows it (an
ipywidgets view mutated on the kernel's loop, or static HTML and stable text where no widget frontend
exists). ``panel`` and ``watch`` need the ``lab`` extra (ipywidgets); ``progress`` falls back to text.
"""
