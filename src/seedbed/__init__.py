"""Seedbed: grow your own language model from your own data on one machine, and serve it cheaply."""

__version__ = "0.1.0"
