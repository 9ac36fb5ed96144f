"""Shared fixtures: real data sets loaded once per session, and quick recipe runs."""

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


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`quick_run(recipe)`: (run folder, metrics) of the recipe's --quick run on its default data."""
    from recipes.engine.run import run_recipe

    return lambda recipe: run_recipe(recipe, quick=True, out=tmp_path_factory.mktemp("runs") / recipe, verbose=0)
