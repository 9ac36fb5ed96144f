"""The `aezoo` command line; imports stay lazy so `predict`, `presets` and `--help` run without TensorFlow."""

from recipes.cli.main import main

__all__ = ["main"]
