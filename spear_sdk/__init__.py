"""Spear Lab: run, watch and test functions from a notebook."""

__version__ = "0.1.0"
