"""Training transforms more than one task uses: (x, y, rng) -> (x, y) functions applied per batch."""

from zoo.data import random_occlusion
from zoo.errors import ZooError


def occlusion_transform(min_fraction, max_fraction):
    """A training transform (x, y, rng) -> (x with one random rectangle blanked per image, y)."""
    if not 0 < min_fraction <= max_fraction <= 1:
        raise ZooError(f"params.min_fraction <= params.max_fraction must hold (both in (0, 1]), got {min_fraction} and {max_fraction}")

    def occlude(x, y, rng):
        return random_occlusion(x, rng, min_fraction=min_fraction, max_fraction=max_fraction)[0], y

    return occlude
