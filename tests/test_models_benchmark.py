"""`aezoo benchmark models` at a tiny budget on digits: one row per type, finite numbers where defined."""

import math

import pytest

from recipes.tools import models_benchmark

pytestmark = pytest.mark.slow  # trains and exports every model type


def test_every_type_gets_a_row_with_finite_numbers_where_its_measure_is_defined():
    rows, text = models_benchmark.table("digits", examples=200, test_examples=100, epochs=1, batch_size=32, latent_dim=8)
    assert list(rows) == [row for row, _, _ in models_benchmark.TYPES]
    column = {name: index for index, name in enumerate(models_benchmark.COLUMNS)}
    vaes = {"vae", "vae iwae", "vae tc"}
    samplers = vaes | {"wae", "aae", "cvae"}
    for row, cells in rows.items():
        def number(name):
            return float(cells[column[name]].replace(",", ""))

        assert 0 < number("reconstruction MSE") < 1, row  # digits lie in [0, 1]
        assert 0 <= number("linear probe") <= 1 and 0 <= number("5-NN") <= 1, row
        assert number("parameters") > 0, row
        for measure, defined in (("negative ELBO (nats)", vaes), ("IS-NLL (nats)", vaes),
                                 ("Fréchet distance of samples", samplers)):
            if row in defined:
                assert math.isfinite(number(measure)), (row, measure)
            else:
                assert cells[column[measure]] == "-", (row, measure)
        assert cells[column["int8 file"]].startswith(("- (", *"0123456789")), row
    assert "| dense_ae |" in text and "--epochs 1" in text
