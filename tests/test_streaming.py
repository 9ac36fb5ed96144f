"""Image folders through tf.data, .npy files through a memory map and CSV series as windowed views: checks
and conversions, streamed training, streamed evaluation, data options."""

import numpy as np
import pytest
from PIL import Image

import zoo
from recipes.cli import main
from recipes.engine import training
from recipes.engine.run import run_recipe
from zoo import data
from zoo.errors import DataNotFoundError, ZooError


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory, digits):
    """240 of scikit-learn's digits as 8x8 grayscale PNGs, one sub-folder per class."""
    folder = tmp_path_factory.mktemp("digits") / "images"
    for i, (image, label) in enumerate(zip(digits.x_train[:240], digits.y_train[:240])):
        (folder / f"digit_{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[..., 0] * 255).round().astype(np.uint8)).save(folder / f"digit_{label}" / f"{i:03d}.png")
    return folder


def test_a_streamed_folder_holds_the_images_and_split_of_the_loaded_one(digit_folder, monkeypatch):
    loaded = data.load(str(digit_folder))
    streamed = data.load(str(digit_folder), stream=True)
    assert not loaded.streaming and streamed.streaming
    assert streamed.input_shape == loaded.input_shape == (8, 8, 1) and len(streamed.x_test) == len(loaded.x_test) == 48
    decoded = streamed.in_memory()
    np.testing.assert_array_equal(decoded.x_train, loaded.x_train)
    np.testing.assert_array_equal(decoded.y_test, loaded.y_test)
    assert streamed.info["classes"] == [f"digit_{d}" for d in range(10)]
    # a digit from its PNG is the scikit-learn digit to 8-bit precision
    first = int(streamed.x_train.files[0].split("/")[-1][:3])
    np.testing.assert_allclose(decoded.x_train[0], data.load("digits").x_train[first], atol=0.5 / 255 + 1e-6)
    monkeypatch.setattr(data, "STREAM_ABOVE_BYTES", 240 * 8 * 8 * 4 - 1)  # one byte less than the folder as float32
    assert data.load(str(digit_folder)).streaming


def test_image_size_and_color_mode_convert_what_would_otherwise_be_refused(tmp_path):
    Image.new("L", (8, 6), color=51).save(tmp_path / "a.png")
    Image.new("RGB", (12, 9), color=(255, 0, 0)).save(tmp_path / "b.png")
    Image.new("L", (8, 6), color=0).save(tmp_path / "c.png")  # three images: one for the test split
    with pytest.raises(ZooError, match=r"b.png is 12x9 RGB but .*a.png is 8x6 grayscale; .* set data.image_size=\[H, W\]"):
        data.load(str(tmp_path))
    with pytest.raises(ZooError, match=r"b.png is 12x9 RGB but .*a.png is 8x6 grayscale; .* set data.color_mode=grayscale\|rgb"):
        data.load(str(tmp_path), image_size=[6, 8])
    rgb = data.load(str(tmp_path), image_size=[6, 8], color_mode="rgb", stream=True)
    images = {path.split("/")[-1]: image for path, image in zip(
        [*rgb.x_train.files, *rgb.x_test.files], np.concatenate([rgb.x_train.numpy(), rgb.x_test.numpy()]))}
    assert images["a.png"].shape == (6, 8, 3)
    np.testing.assert_allclose(images["a.png"], 51 / 255, atol=1e-6)  # grey stays grey in every channel
    np.testing.assert_allclose(images["b.png"], np.broadcast_to([1.0, 0.0, 0.0], (6, 8, 3)), atol=1e-6)
    grey = data.load(str(tmp_path), image_size=[6, 8], color_mode="grayscale")
    assert grey.input_shape == (6, 8, 1)
    with pytest.raises(ZooError, match="data.image_size must be"):
        data.load(str(tmp_path), image_size=[6])
    with pytest.raises(ZooError, match="data.color_mode must be one of grayscale, rgb"):
        data.load(str(tmp_path), color_mode="cmyk")


def test_unreadable_empty_and_tiff_folders_fail_in_one_line(tmp_path, digit_folder):
    with pytest.raises(DataNotFoundError, match="no images"):
        data.load(str(tmp_path))
    Image.new("L", (4, 4)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ZooError, match=r"cannot read image .*broken.png \(.*\); remove or replace it$"):
        data.load(str(tmp_path))
    (tmp_path / "broken.png").unlink()
    Image.new("L", (4, 4)).save(tmp_path / "scan.tif")
    with pytest.raises(ZooError, match="scan.tif: TIFF images are not read .*convert them to PNG"):
        data.load(str(tmp_path))
    with pytest.raises(ZooError, match="data.image_size applies to image folders, TFRecord files and TensorFlow Datasets, not digits"):
        data.load("digits", image_size=[4, 4])
    with pytest.raises(ZooError, match="data.image_key applies to TFRecord files, not the image folder"):
        data.load(str(digit_folder), image_key="image")


def train_dense(x, run_dir, **options):
    settings = training.TrainSettings(epochs=2, batch_size=32, patience=0, verbose=0, precision="float32", seed=4)
    noisy = lambda xb, yb, rng: (np.clip(xb + rng.normal(0, 0.2, xb.shape), 0, 1).astype("float32"), yb)  # noqa: E731
    return training.train(lambda: zoo.create("dense_ae", (8, 8, 1), 4, hidden_units=[16]), x, settings=settings,
                          run_dir=run_dir, run_name="dense", transform=noisy, **options)


class StopAfterOne(training.keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def trains_like_its_arrays(streamed, tmp_path):
    """The model trained on `streamed`, after checking it matches training on the same data as arrays."""
    from_arrays, history = train_dense(streamed.numpy(), tmp_path / "arrays")
    from_stream, streamed_history = train_dense(streamed, tmp_path / "streamed")
    assert [row["loss"] for row in streamed_history] == pytest.approx([row["loss"] for row in history], abs=1e-6)
    for a, b in zip(from_arrays.get_weights(), from_stream.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    return from_stream


def test_streamed_training_sees_the_batches_of_the_array_path_and_resumes_exactly(digit_folder, tmp_path):
    streamed = data.load(str(digit_folder), stream=True).x_train
    from_files = trains_like_its_arrays(streamed, tmp_path)

    train_dense(streamed, tmp_path / "resumed", callbacks=[StopAfterOne()])
    resumed, resumed_history = train_dense(streamed, tmp_path / "resumed", resume=True)
    assert len(resumed_history) == 2
    for a, b in zip(from_files.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_a_users_tf_data_dataset_trains_reproducibly_and_resumes_exactly(digits, tmp_path):
    import tensorflow as tf

    from zoo.dataset_examples import DatasetExamples

    frames = tf.data.Dataset.from_tensor_slices(digits.x_train[:240]).map(tf.image.flip_left_right)  # a user's pipeline
    first, history = train_dense(frames, tmp_path / "first")
    again, _ = train_dense(frames, tmp_path / "again")
    train_dense(frames, tmp_path / "resumed", callbacks=[StopAfterOne()])
    resumed, resumed_history = train_dense(frames, tmp_path / "resumed", resume=True)
    assert len(history) == len(resumed_history) == 2 and all(row["val_loss"] > 0 for row in history)
    for a, b, c in zip(first.get_weights(), again.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, atol=1e-6, rtol=0)

    unknown_length = DatasetExamples(frames.filter(lambda image: True))  # cardinality unknown: counted once
    assert len(unknown_length) == 240 and unknown_length.shape == (240, 8, 8, 1) and len(unknown_length[216:]) == 24
    np.testing.assert_array_equal(unknown_length[:24].numpy(), digits.x_train[:24, :, ::-1])
    epoch = lambda e: np.stack([x for x, _ in unknown_length.shuffled(4, e).as_numpy_iterator()])  # noqa: E731
    assert np.array_equal(epoch(1), epoch(1)) and not np.array_equal(epoch(0), epoch(1))
    np.testing.assert_array_equal(np.sort(epoch(1).ravel()), np.sort(digits.x_train[:240].ravel()))  # every example once


def test_a_batched_infinite_or_integer_tf_data_dataset_fails_in_one_line(digits, tmp_path):
    import tensorflow as tf

    images = tf.data.Dataset.from_tensor_slices(digits.x_train[:64])
    for dataset, message in [
        (images.batch(8), "give one unbatched float example per element"),
        (images.repeat(), "is infinite"),
        (images.map(lambda x: tf.cast(x * 255, tf.uint8)), "cast with .map"),
        (images.map(lambda x: (x, x, x)), "3 tensors per element"),
    ]:
        with pytest.raises(ZooError, match=message) as error:
            train_dense(dataset, tmp_path / "refused")
        assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def digit_npy(tmp_path_factory, digits):
    """240 digits as one uint8 .npy file (n, 8, 8, 1), the form a large image array is usually saved in."""
    path = tmp_path_factory.mktemp("npy") / "digits.npy"
    np.save(path, (digits.x_train[:240] * 255).round().astype(np.uint8))
    return path


def test_a_npy_file_streams_through_a_memory_map_with_the_split_of_the_loaded_one(digit_npy, monkeypatch):
    from zoo.mapped_array import MappedRows

    loaded = data.load(str(digit_npy))
    mapped = data.load(str(digit_npy), stream=True)
    assert not loaded.streaming and mapped.streaming
    assert isinstance(mapped.x_train, MappedRows) and isinstance(mapped.x_train.array, np.memmap)  # nothing read
    assert mapped.input_shape == loaded.input_shape == (8, 8, 1) and len(mapped.x_test) == len(loaded.x_test) == 48
    np.testing.assert_array_equal(mapped.in_memory().x_train, loaded.x_train)
    np.testing.assert_array_equal(np.concatenate(list(mapped.x_test.dataset(20).as_numpy_iterator())), loaded.x_test)
    assert loaded.x_train.max() == 1.0  # uint8 scaled by 255, as when loaded
    monkeypatch.setattr(data, "STREAM_ABOVE_BYTES", 240 * 8 * 8 * 4 - 1)  # one byte less than the file as float32
    assert data.load(str(digit_npy)).streaming


def test_a_mapped_npy_trains_on_the_batches_of_the_array_path(digit_npy, tmp_path):
    trains_like_its_arrays(data.load(str(digit_npy), stream=True).x_train, tmp_path)


@pytest.mark.slow  # runs a recipe
def test_reduce_streams_a_mapped_npy(digit_npy, tmp_path):
    sets = ["data.stream=true", "params.tutorial_baseline=false"]
    run_dir, metrics = run_recipe("reduce", data=str(digit_npy), model="dense_ae", sets=sets, epochs=1,
                                  out=tmp_path / "reduce", verbose=0)
    assert 0 < metrics["metrics"]["reconstruction MSE (M=16)"]["PCA"] < 0.1
    assert "IncrementalPCA over the 192 training images" in (run_dir / "report.md").read_text()


def test_a_mapped_npy_with_nan_and_stream_on_other_files_fail_in_one_line(tmp_path):
    values = np.zeros((300, 4, 4), "float32")
    values[123, 2, 1] = np.nan
    values[200, 0, 0] = np.inf
    np.save(tmp_path / "bad.npy", values)
    with pytest.raises(ZooError, match=r"has 2 NaN/infinite values \(first at index \(123, 2, 1\)\)") as error:
        data.load(str(tmp_path / "bad.npy"), stream=True)
    assert "\n" not in str(error.value)
    np.savez(tmp_path / "arrays.npz", x=values)
    with pytest.raises(ZooError, match="data.stream applies to image folders, TFRecord files, TensorFlow Datasets, .npy files and .csv files, not"):
        data.load(str(tmp_path / "arrays.npz"), stream=True)


@pytest.fixture(scope="module")
def co2_csv(tmp_path_factory):
    """The weekly Mauna Loa CO2 series (statsmodels) and its week-to-week change, with labelled anomalies, as a CSV."""
    import statsmodels.api as sm

    co2 = sm.datasets.co2.load_pandas().data["co2"].interpolate().bfill().to_numpy()
    co2, labels = data.inject_anomalies(co2, np.random.default_rng(1), 6, start=int(len(co2) * 0.8))
    rows = [f"{i},{v:.2f},{d:.2f},{y}" for i, (v, d, y) in enumerate(zip(co2, np.diff(co2, prepend=co2[0]), labels))]
    path = tmp_path_factory.mktemp("csv") / "co2.csv"
    path.write_text("\n".join(["step,co2,change,label", *rows]))
    return path


def test_a_csv_series_streams_its_windows_as_views_of_the_series_parsed_in_chunks(co2_csv, monkeypatch):
    from zoo.mapped_array import MappedRows

    loaded = data.load(str(co2_csv), window=16, stride=3)
    monkeypatch.setattr(data, "CSV_CHUNK_ROWS", 100)  # 2,284 rows: parsed in 23 chunks
    streamed = data.load(str(co2_csv), window=16, stride=3, stream=True)
    assert not loaded.streaming and streamed.streaming and streamed.input_shape == loaded.input_shape == (16, 2)
    assert isinstance(streamed.x_train, MappedRows) and np.shares_memory(streamed.x_train.array, streamed.info["series"])
    np.testing.assert_array_equal(streamed.info["series"], loaded.info["series"])
    np.testing.assert_array_equal(streamed.in_memory().x_train, loaded.x_train)
    np.testing.assert_array_equal(np.concatenate(list(streamed.x_test.dataset(50).as_numpy_iterator())), loaded.x_test)
    assert streamed.y_test.max() == 1 and np.array_equal(streamed.y_test, loaded.y_test)
    windows_bytes = (len(loaded.x_train) + len(loaded.x_test)) * 16 * 2 * 4
    monkeypatch.setattr(data, "STREAM_ABOVE_BYTES", windows_bytes - 1)
    assert data.load(str(co2_csv), window=16, stride=3).streaming


def test_a_csv_with_text_in_a_numeric_column_or_no_numeric_column_fails_in_one_line(co2_csv, tmp_path, monkeypatch):
    lines = co2_csv.read_text().splitlines()
    lines[250] = lines[250].replace(lines[250].split(",")[1], "n/a")
    (tmp_path / "gap.csv").write_text("\n".join(lines))
    monkeypatch.setattr(data, "CSV_CHUNK_ROWS", 100)  # line 251 is in the third chunk
    with pytest.raises(ZooError, match=r"gap.csv line 251, column 'co2': 'n/a' is not a number; numeric columns must") as error:
        data.load(str(tmp_path / "gap.csv"), stream=True)
    assert "\n" not in str(error.value)
    (tmp_path / "text.csv").write_text("date,city\n2020,Oslo\n2021,Rome\n")
    with pytest.raises(ZooError, match="text.csv has no numeric column; columns: date, city"):
        data.load(str(tmp_path / "text.csv"))


@pytest.mark.slow  # runs a recipe, streamed and loaded
def test_anomaly_streams_a_csv_series_to_the_scores_of_the_loaded_one(co2_csv, tmp_path):
    common = {"data": str(co2_csv), "quick": True, "epochs": 2, "verbose": 0}
    _, loaded = run_recipe("anomaly", sets=["data.stride=8"], out=tmp_path / "loaded", **common)
    _, streamed = run_recipe("anomaly", sets=["data.stride=8", "data.stream=true"], out=tmp_path / "streamed", **common)
    assert streamed["train_examples"] == loaded["train_examples"] > 100
    for metric, values in loaded["metrics"].items():
        assert streamed["metrics"][metric]["z-score"] == pytest.approx(values["z-score"], abs=1e-9), metric
        assert streamed["metrics"][metric]["autoencoder"] == pytest.approx(values["autoencoder"], abs=0.02), metric
    assert 0.5 < streamed["metrics"]["ROC-AUC"]["autoencoder"] <= 1


def write_records(path, images, labels=None, image_key="image"):
    """tf.train.Example records of PNG-encoded images (and int64 labels), as TensorFlow Datasets writes them."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, image in enumerate(images):
            feature = {image_key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.encode_png(image).numpy()]))}
            if labels is not None:
                feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[i])]))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


@pytest.fixture(scope="module")
def digit_records(tmp_path_factory, digits):
    """240 digits as PNG records with labels in two shards, and the uint8 images and labels they hold."""
    folder = tmp_path_factory.mktemp("records") / "digits"
    folder.mkdir()
    images = (digits.x_train[:240] * 255).round().astype(np.uint8)
    labels = digits.y_train[:240]
    write_records(folder / "digits-train.tfrecord-00000-of-00002", images[:100], labels[:100])
    write_records(folder / "digits-train.tfrecord-00001-of-00002", images[100:], labels[100:])
    return folder, images, labels


def test_tfrecord_shards_stream_each_record_by_its_number(digit_records):
    folder, images, labels = digit_records
    streamed = data.load(str(folder), stream=True)
    loaded = data.load(str(folder))
    assert streamed.streaming and not loaded.streaming and streamed.input_shape == (8, 8, 1)
    decoded = streamed.in_memory()
    np.testing.assert_array_equal(decoded.x_train, loaded.x_train)
    np.testing.assert_array_equal(decoded.y_test, loaded.y_test)
    numbers = streamed.x_train.files  # records across both shards, counted in order
    np.testing.assert_allclose(decoded.x_train, images[numbers] / 255, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(decoded.y_train, labels[numbers])
    one_shard = data.load(str(folder / "digits-train.tfrecord-00001-of-00002"))
    assert len(one_shard.x_train) + len(one_shard.x_test) == 140 and one_shard.y_train is not None


def test_tfrecords_train_on_the_batches_of_the_array_path(digit_records, tmp_path):
    trains_like_its_arrays(data.load(str(digit_records[0]), stream=True).x_train, tmp_path)


def test_tfrecords_without_the_image_feature_truncated_or_undecodable_fail_in_one_line(tmp_path, digits):
    images = (digits.x_train[:20] * 255).round().astype(np.uint8)
    write_records(tmp_path / "pixels.tfrecord", images, image_key="pixels")
    with pytest.raises(ZooError, match=r"no image feature \('image' or 'image/encoded'; they have: pixels\); set data.image_key=NAME"):
        data.load(str(tmp_path / "pixels.tfrecord"))
    assert data.load(str(tmp_path / "pixels.tfrecord"), image_key="pixels").input_shape == (8, 8, 1)
    with pytest.raises(ZooError, match="no feature 'lbl' for data.label_key"):
        data.load(str(tmp_path / "pixels.tfrecord"), image_key="pixels", label_key="lbl")

    content = (tmp_path / "pixels.tfrecord").read_bytes()
    (tmp_path / "cut.tfrecord").write_bytes(content[: len(content) - 10])
    with pytest.raises(ZooError, match="cut.tfrecord is not a TFRecord file or is truncated"):
        data.load(str(tmp_path / "cut.tfrecord"), image_key="pixels")

    import tensorflow as tf

    with tf.io.TFRecordWriter(str(tmp_path / "broken.tfrecord")) as writer:
        for payload in (tf.io.encode_png(images[0]).numpy(), b"not an image"):
            feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[payload]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    with pytest.raises(ZooError, match=r"cannot read image .*broken.tfrecord record 1 \(.*\); remove or replace it") as error:
        data.load(str(tmp_path / "broken.tfrecord"))
    assert "\n" not in str(error.value)


def test_a_tensorflow_datasets_set_prepared_in_data_dir_streams_its_own_splits(tmp_path, digits):
    import tensorflow_datasets as tfds

    images = (digits.x_train[:80] * 255).round().astype(np.uint8)
    labels = digits.y_train[:80]

    class AezooTinyDigits(tfds.core.GeneratorBasedBuilder):  # registered with TFDS by its definition
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = {"image": tfds.features.Image(shape=(8, 8, 1)), "label": tfds.features.ClassLabel(num_classes=10)}
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(0, 60), "test": self._generate_examples(60, 80)}

        def _generate_examples(self, start, stop):
            for i in range(start, stop):
                yield i, {"image": images[i], "label": int(labels[i])}

    data_dir = tmp_path / "tensorflow_datasets"
    with pytest.raises(DataNotFoundError, match=f"aezoo_tiny_digits is not prepared in {data_dir}; run 'tfds build"):
        data.load("aezoo_tiny_digits", data_dir=str(data_dir))
    AezooTinyDigits(data_dir=str(data_dir)).download_and_prepare()

    streamed = data.load("aezoo_tiny_digits", data_dir=str(data_dir), stream=True)
    loaded = data.load("aezoo_tiny_digits", data_dir=str(data_dir))
    assert streamed.streaming and not loaded.streaming
    assert (len(streamed.x_train), len(streamed.x_test)) == (60, 20)  # the data set's own splits
    assert streamed.info["classes"] == [str(d) for d in range(10)]
    decoded = streamed.in_memory()
    np.testing.assert_array_equal(decoded.x_train, loaded.x_train)

    def rows_by_content(x):  # TFDS shuffles examples into its shards: compare them as sorted rows
        pixels = np.round(x * 255).astype(np.uint8).reshape(len(x), -1)
        return pixels[np.lexsort(pixels.T)]

    np.testing.assert_array_equal(rows_by_content(decoded.x_test), rows_by_content(images[60:] / 255))
    with pytest.raises(ZooError, match="data.stream needs data.data_dir"):
        data.load("aezoo_tiny_digits", stream=True)


def test_aezoo_train_takes_data_options_and_refuses_unknown_ones(digit_folder, tmp_path, capsys):
    common = ["train", "dense_ae", "--data", str(digit_folder), "--epochs", "1", "--latent-dim", "4", "--set", "hidden_units=[16]"]
    assert main([*common, "--set", "data.colour=rgb", "--out", str(tmp_path / "bad")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("aezoo: error: unknown data key 'colour'; choose one of:") and "color_mode" in error
    assert "\n" not in error
    assert main([*common, "--set", "data.stream=true", "--set", "data.image_size=[12,12]", "--out", str(tmp_path / "run")]) == 0
    metrics = (tmp_path / "run" / "metrics.json").read_text()
    assert '"test_mse"' in metrics and tuple(training.keras.models.load_model(tmp_path / "run" / "model.keras").data_shape) == (12, 12, 1)


@pytest.mark.slow  # runs a recipe
def test_reduce_streams_a_folder(digit_folder, tmp_path):
    sets = ["data.stream=true", "params.tutorial_baseline=false", "params.neighbours=3"]
    run_dir, metrics = run_recipe("reduce", data=str(digit_folder), model="dense_ae", sets=sets, epochs=2,
                                  out=tmp_path / "reduce", verbose=0)
    values = metrics["metrics"]
    assert set(values) >= {"reconstruction MSE (M=16)", "linear-probe accuracy", "3-NN accuracy"}
    assert 0 < values["reconstruction MSE (M=16)"]["PCA"] < 0.1 and values["linear-probe accuracy"]["PCA"] > 0.5
    assert "IncrementalPCA over the 192 training images" in (run_dir / "report.md").read_text()


SMALL_CONV = ["model.filters=[8, 16]", "model.hidden_units=32", "model.latent_dim=8"]


@pytest.mark.slow  # a recipe run per recipe, streamed and loaded
@pytest.mark.parametrize("recipe, options", [
    ("denoise", [*SMALL_CONV, "params.eval_examples=40"]),
    ("inpaint", [*SMALL_CONV, "params.eval_examples=40"]),
    ("classify", [*SMALL_CONV, "params.label_fractions=[0.1, 1.0]", "params.label_draws=1", "params.pretraining=inpaint",
                  "params.pseudo_labels_per_class=5", "params.pseudo_label_epochs=1"]),
    ("generate", ["model.latent_dim=4", "model.backbone_config={hidden_units=[32]}", "params.importance_samples=4",
                  "params.compare={AAE={name=\"aae\"}}",  # one of the types beside the VAE: its own train_step
                  "params.classifier_epochs=1", "params.quality_samples=30", "params.eval_examples=40"]),
    ("finetune", ["data.image_size=[28, 28]", "params.eval_examples=40"]),
])
def test_every_recipe_trains_streamed_to_the_scores_of_the_loaded_folder(recipe, options, digit_folder, tmp_path):
    finetune = recipe == "finetune"  # it starts from a preset and trains no tutorial network
    sets = [*([] if finetune else ["params.tutorial_baseline=false"]), *options]
    common = {"data": str(digit_folder), "epochs": 2, "verbose": 0, "from_preset": "dense_ae_fashion_mnist" if finetune else None}
    _, loaded = run_recipe(recipe, sets=sets, out=tmp_path / "loaded", **common)
    run_dir, streamed = run_recipe(recipe, sets=[*sets, "data.stream=true"], out=tmp_path / "streamed", **common)
    assert streamed["metrics"].keys() == loaded["metrics"].keys() and len(loaded["metrics"]) >= 2
    for metric, values in loaded["metrics"].items():
        assert streamed["metrics"][metric] == pytest.approx(values, abs=1e-4), metric
    if recipe != "classify":  # classify scores every test image, batch by batch
        assert "first 40 of the 48 test images" in (run_dir / "report.md").read_text()
