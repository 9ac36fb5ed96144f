"""Shared fixtures: real data sets loaded once per session."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mnist():
    """The embedded MNIST subset (4000 train / 1000 test, 28x28x1 in [0, 1])."""
    from zoo.data import load

    return load("mnist5k")


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits (1438 train / 359 test) - the fastest real images."""
    from zoo.data import load

    return load("digits")
