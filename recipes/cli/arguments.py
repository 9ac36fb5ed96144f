"""What every `aezoo` command line shares: a parser whose errors are one line with exit code 2,
and argparse types for counts and lists of them (no TensorFlow imported)."""

import argparse


class Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line with exit code 2, like every other aezoo error, and takes
    options by their whole names only (argparse's prefix matching would read --epoch as --epochs)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        self.exit(2, f"aezoo: error: {message} (see '{self.prog} --help')\n")


def _whole_number(text, minimum):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def count(text):
    """argparse type of counts (epochs, batch sizes, code widths): a whole number >= 1."""
    return _whole_number(text, 1)


def count_or_zero(text):
    """argparse type of optional counts and seeds (0: none, or the first seed): a whole number >= 0."""
    return _whole_number(text, 0)


def counts(text):
    """argparse type of a comma list of counts: '10000,60000' -> [10000, 60000]."""
    return [count(part.strip()) for part in text.split(",")]
