"""`aezoo benchmark models` at a tiny budget on digits: one row per chosen type, finite numbers where defined.

Every type's training and export is tested in tests/test_autoencoder_types.py and tests/test_export_types.py;
here four rows cover the table's branches: a plain family, a VAE bound, the vq_vae's indices, and a
labelled sampler (no micro file: two inputs)."""

import math

import pytest

import zoo
from recipes.tools import models_benchmark

pytestmark = pytest.mark.slow  # trains and exports each chosen type

CHOSEN = ["dense_ae", "vae iwae", "vq_vae", "cvae"]


def test_each_chosen_type_gets_a_row_with_finite_numbers_where_its_measure_is_defined():
    rows, text = models_benchmark.table("digits", examples=200, test_examples=100, epochs=1, batch_size=32, latent_dim=8,
                                        types=list(reversed(CHOSEN)))
    assert list(rows) == CHOSEN  # in the table's order, whatever the order asked
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
        assert cells[column["int8 file"]][0].isdigit(), row
    assert cells_of(rows, "cvae", "TFLM arena").startswith("- (") and cells_of(rows, "vq_vae", "TFLM arena")[0].isdigit()
    assert "| dense_ae |" in text and "--epochs 1" in text and "--types 'dense_ae,vae iwae,vq_vae,cvae'" in text


def cells_of(rows, row, column):
    return rows[row][models_benchmark.COLUMNS.index(column)]


def test_an_unknown_type_is_refused_naming_the_rows():
    with pytest.raises(zoo.ZooError, match="unknown type 'vqvae'; choose one of: .*vq_vae"):
        models_benchmark.selected_types(["vqvae"])
