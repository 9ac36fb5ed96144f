"""Bad input gets one clear line naming the problem and the fix."""

import numpy as np
import pytest

import zoo
from zoo.errors import DataNotFoundError, ZooError


def one_line(error):
    message = str(error.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ZooError) as error:
        zoo.create("resnet_ae", input_shape=(28, 28, 1))
    assert "conv_ae" in one_line(error) and "vae" in one_line(error)


def test_unknown_option_lists_the_valid_options():
    with pytest.raises(ZooError) as error:
        zoo.create("conv_ae", input_shape=(28, 28, 1), filter=[8])
    assert "'filter'" in one_line(error) and "filters" in one_line(error)


def test_unknown_vae_backbone_and_backbone_option():
    with pytest.raises(ZooError, match="backbone"):
        zoo.create("vae", input_shape=(28, 28, 1), backbone="resnet")
    with pytest.raises(ZooError, match="units"):
        zoo.create("vae", input_shape=(28, 28, 1), backbone="conv", backbone_config={"units": [8]})


def test_vae_refuses_a_reconstruction_loss_that_is_no_likelihood():
    with pytest.raises(ZooError) as error:
        zoo.create("vae", input_shape=(28, 28, 1), reconstruction_loss="psnr")
    assert "'psnr'" in one_line(error) and "bce, mse" in one_line(error)


@pytest.mark.parametrize("name,shape", [("dense_ae", (8, 8, 1)), ("conv_ae", (4, 4, 1)), ("lstm_ae", (4, 4)), ("vae", (8, 8, 1))])
def test_latent_dim_must_be_smaller_than_the_input(name, shape):
    with pytest.raises(ZooError) as error:
        zoo.create(name, input_shape=shape, latent_dim=int(np.prod(shape)))
    assert "must be smaller than the input size" in one_line(error)


def test_hidden_width_outside_input_and_code_is_refused():
    with pytest.raises(ZooError, match="strictly between"):
        zoo.create("dense_ae", input_shape=(64,), latent_dim=8, hidden_units=[128])


@pytest.mark.parametrize("name,shape", [("conv_ae", (28, 28)), ("lstm_ae", (28, 28, 1)), ("transformer_ae", (784,))])
def test_wrong_input_rank_for_a_family(name, shape):
    with pytest.raises(ZooError) as error:
        zoo.create(name, input_shape=shape, latent_dim=4)
    assert "rank" in one_line(error)


def test_wrong_input_shape_names_expected_and_got():
    model = zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=4, filters=[4])
    with pytest.raises(ZooError) as error:
        model(np.zeros((2, 32, 32, 1), "float32"))
    message = one_line(error)
    assert "(batch, 28, 28, 1)" in message and "(2, 32, 32, 1)" in message
    with pytest.raises(ZooError, match="codes of shape"):
        model.decode(np.zeros((2, 5), "float32"))


def test_one_example_without_the_batch_axis_is_told_to_add_it():
    model = zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=4, filters=[4])
    with pytest.raises(ZooError) as error:
        model(np.zeros((28, 28, 1), "float32"))
    message = one_line(error)
    assert "add the batch axis" in message and "(1, 28, 28, 1)" in message and "input_shape=" not in message


@pytest.mark.parametrize("stream", [False, True])
def test_a_corrupt_png_is_named_without_tensorflow_internals(tmp_path, stream):
    from PIL import Image

    for i in range(3):
        Image.new("L", (8, 8), color=60 * i).save(tmp_path / f"{i}.png")
    (tmp_path / "2.png").write_bytes((tmp_path / "0.png").read_bytes()[:40])  # cut inside the header
    with pytest.raises(ZooError) as error:
        zoo.data.load(str(tmp_path), stream=stream)
    message = one_line(error)
    assert message == f"cannot read image {tmp_path / '2.png'} (Invalid PNG. Failed to initialize decoder.); remove or replace it"


@pytest.mark.parametrize("assignment,expected", [
    ("quick.train_examples=-5", "quick.train_examples must be >= 1, got -5"),
    ("data.window=0", "data.window must be >= 1, got 0"),
    ("train.patience=-2", "train.patience must be >= 0, got -2"),
    ("params.map_examples=-1", "params.map_examples must be >= 1, got -1"),
])
def test_negative_counts_in_a_recipe_config_are_refused_where_they_are_set(assignment, expected):
    from recipes.engine.run import resolve

    with pytest.raises(ZooError) as error:
        resolve("reduce", sets=[assignment], quick=True)
    assert one_line(error) == expected


def test_integer_images_are_refused_with_the_scaling_fix():
    model = zoo.create("dense_ae", input_shape=(8, 8, 1), latent_dim=4)
    with pytest.raises(ZooError) as error:
        model.encode(np.zeros((2, 8, 8, 1), "uint8"))
    assert "/ 255" in one_line(error)


def test_nan_in_training_data_is_refused_before_training(tmp_path):
    from recipes.engine.training import TrainSettings, train

    x = np.random.default_rng(0).random((64, 8, 8, 1)).astype("float32")
    x[3, 2, 2, 0] = np.nan
    with pytest.raises(ZooError) as error:
        train(lambda: zoo.create("dense_ae", (8, 8, 1), 4), x, settings=TrainSettings(epochs=1, verbose=0),
              run_dir=tmp_path, run_name="t")
    assert "NaN" in one_line(error)
    assert not (tmp_path / "checkpoints").exists()


def test_missing_data_files_say_where_they_looked(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError) as error:
        zoo.data.load("fashion_mnist", path=str(tmp_path))
    assert str(tmp_path) in one_line(error)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        zoo.data.load(str(tmp_path / "nope.npy"))


def test_unknown_data_set_name_lists_the_valid_ones():
    with pytest.raises(ZooError) as error:
        zoo.data.load("not_a_dataset_anywhere")
    assert "mnist5k" in one_line(error)
