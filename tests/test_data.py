"""Data loaders on real data: named sets, the user's own files, IDX parsing, tfds, corruptions."""

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from zoo import data
from zoo.errors import DataNotFoundError, ZooError


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fashion_like_folder(tmp_path, mnist):
    """A folder of IDX files in Fashion-MNIST's layout, made from real MNIST images."""
    images = (mnist.x_train[:60, ..., 0] * 255).round().astype(np.uint8)
    labels = mnist.y_train[:60].astype(np.uint8)
    for prefix, part in (("train", slice(0, 50)), ("t10k", slice(50, 60))):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images[part])
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels[part])
    return tmp_path


def test_mnist5k_is_a_stratified_offline_split(mnist):
    assert mnist.x_train.shape == (4000, 28, 28, 1) and mnist.x_test.shape == (1000, 28, 28, 1)
    assert mnist.x_train.dtype == np.float32 and 0 <= mnist.x_train.min() and mnist.x_train.max() == 1
    assert np.bincount(mnist.y_test).tolist() == [100] * 10


def test_digits_are_scaled_to_unit_range(digits):
    assert digits.input_shape == (8, 8, 1) and digits.x_train.max() == 1.0 and digits.x_train.min() == 0.0
    assert len(digits.x_train) + len(digits.x_test) == 1797


def test_fashion_mnist_reads_idx_files_from_a_folder(fashion_like_folder, mnist, monkeypatch):
    splits = data.load("fashion_mnist", path=str(fashion_like_folder))
    assert splits.x_train.shape == (50, 28, 28, 1) and splits.x_test.shape == (10, 28, 28, 1)
    np.testing.assert_allclose(splits.x_train[0], mnist.x_train[0], atol=1 / 255)
    assert splits.y_test.tolist() == mnist.y_train[50:60].tolist()
    monkeypatch.setenv(data.FASHION_MNIST_ENV, str(fashion_like_folder))
    assert data.load("fashion_mnist").x_train.shape == (50, 28, 28, 1)


def test_truncated_or_corrupt_idx_files_are_refused(fashion_like_folder):
    images = fashion_like_folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(ZooError, match="truncated"):
        data.load("fashion_mnist", path=str(fashion_like_folder))
    images.write_bytes(b"not a gzip file at all")
    with pytest.raises(ZooError, match="not a readable IDX file"):
        data.load("fashion_mnist", path=str(fashion_like_folder))


def test_a_tfds_name_loads_through_tensorflow_datasets():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        splits = data.load("mnist")
    assert splits.x_train.shape[1:] == (28, 28, 1) and splits.x_train.dtype == np.float32
    assert 0 <= splits.x_train.min() and splits.x_train.max() <= 1 and len(splits.y_train) == len(splits.x_train)


def test_an_image_folder_with_class_subfolders(tmp_path, digits):
    for i, (image, label) in enumerate(zip(digits.x_train[:30], digits.y_train[:30])):
        (tmp_path / f"class_{label}").mkdir(exist_ok=True)
        Image.fromarray((image[..., 0] * 255).astype(np.uint8)).save(tmp_path / f"class_{label}" / f"{i}.png")
    splits = data.load(str(tmp_path))
    assert splits.input_shape == (8, 8, 1) and len(splits.x_train) + len(splits.x_test) == 30
    assert set(splits.info["classes"]) == {f"class_{y}" for y in digits.y_train[:30]}
    odd = tmp_path / f"class_{digits.y_train[0]}" / "odd.png"
    Image.new("L", (9, 8)).save(odd)
    with pytest.raises(ZooError, match="odd.png is 9x8 grayscale but .*0.png is 8x8 grayscale; give images of one size"):
        data.load(str(tmp_path))
    Image.new("RGB", (8, 8)).save(odd)
    with pytest.raises(ZooError, match="odd.png is 8x8 RGB but .*0.png is 8x8 grayscale; give images of one size and one colour mode"):
        data.load(str(tmp_path))
    odd.write_bytes(b"garbage")
    with pytest.raises(ZooError, match="cannot read image"):
        data.load(str(tmp_path))


def test_npy_and_npz_files(tmp_path, digits):
    images = (digits.x_train[:40] * 255).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    splits = data.load(str(tmp_path / "images.npy"))
    assert splits.x_train.dtype == np.float32 and splits.x_train.max() <= 1 and len(splits.x_test) == 8
    np.savez(tmp_path / "split.npz", x_train=images[:30], x_test=images[30:], y_train=digits.y_train[:30])
    splits = data.load(str(tmp_path / "split.npz"))
    assert len(splits.x_train) == 30 and splits.y_test is None
    np.savez(tmp_path / "odd.npz", pixels=images)
    with pytest.raises(ZooError, match="expected x_train/x_test"):
        data.load(str(tmp_path / "odd.npz"))
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY broken")
    with pytest.raises(ZooError, match="not a readable NumPy file"):
        data.load(str(tmp_path / "broken.npy"))


def test_nan_in_a_users_file_is_refused_naming_its_place_in_the_file(tmp_path):
    x = np.random.default_rng(0).random((20, 4, 4)).astype("float32")
    x[15, 1, 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ZooError, match=r"x.npy has 1 NaN/infinite values \(first at index \(15, 1, 2\)\)"):
        data.load(str(tmp_path / "x.npy"))
    np.savez(tmp_path / "x.npz", x=x)
    with pytest.raises(ZooError, match=r"x.npz x has 1 NaN/infinite values \(first at index \(15, 1, 2\)\)"):
        data.load(str(tmp_path / "x.npz"))
    (tmp_path / "series.csv").write_text("time,a,b\n" + "".join(f"{i},{i},{'' if i == 6 else i}\n" for i in range(12)))
    with pytest.raises(ZooError, match="series.csv has 1 empty, NaN or infinite values \\(first on line 8, column 'b'\\)"):
        data.load(str(tmp_path / "series.csv"))


def test_labelled_data_sets_name_their_classes(digits, mnist):
    assert digits.info["classes"] == mnist.info["classes"] == [str(d) for d in range(10)]


def test_a_csv_series_becomes_standardised_windows_with_labels(tmp_path):
    import statsmodels.api as sm

    values = sm.datasets.nile.load_pandas().data["volume"].to_numpy()
    values, labels = data.inject_anomalies(values, np.random.default_rng(0), 3, start=82, length=(2, 5))
    rows = ["year,volume,label"] + [f"{1871 + i},{v},{y}" for i, (v, y) in enumerate(zip(values, labels))]
    (tmp_path / "nile.csv").write_text("\n".join(rows))
    splits = data.load(str(tmp_path / "nile.csv"), window=10, stride=2)
    assert splits.input_shape == (10, 1)
    assert abs(float(splits.x_train.mean())) < 1e-5 and splits.y_test.max() == 1 and splits.y_train.max() == 0
    assert splits.info["test_starts"].min() >= 80


def test_corruptions_keep_range_and_report_the_occlusion_mask(mnist):
    x = mnist.x_test[:50]
    noisy = data.gaussian_noise(x, 0.5, 0)
    assert noisy.shape == x.shape and noisy.min() >= 0 and noisy.max() <= 1 and not np.allclose(noisy, x)
    salted = data.salt_and_pepper(x, 0.2, 0)
    changed = salted != x
    assert 0.1 < changed.mean() < 0.2 and set(np.unique(salted[changed])) <= {0.0, 1.0}
    occluded, mask = data.random_occlusion(x, 0)
    assert mask.shape == x.shape and set(np.unique(mask)) == {0.0, 1.0}
    assert np.all(occluded[mask == 1] == 0) and np.array_equal(occluded[mask == 0], x[mask == 0])
    per_image = mask.reshape(50, -1).mean(1)
    assert per_image.min() >= 0.25**2 * 0.9 and per_image.max() <= 0.5**2 * 1.1


def test_random_shifts_and_flips_move_each_image_within_bounds():
    x = np.zeros((64, 28, 28, 1), "float32")
    x[:, 10, 5] = 1.0  # one bright pixel, off the vertical axis so that a mirror image moves it
    for flip, columns in ((False, range(3, 8)), (True, [*range(3, 8), *range(20, 25)])):
        moved = data.random_shift_flip(x, 0, max_shift=2, flip=flip)
        rows, cols = np.unravel_index(moved.reshape(64, -1).argmax(1), (28, 28))
        assert moved.shape == x.shape and np.allclose(moved.sum((1, 2, 3)), 1.0)
        assert set(rows) == set(range(8, 13)) and set(cols) == set(columns)  # every offset drawn, none beyond 2
    assert np.array_equal(data.random_shift_flip(x, 1, 2, True), data.random_shift_flip(x, 1, 2, True))
    assert np.array_equal(data.random_shift_flip(x, 1, max_shift=0), x)
    with pytest.raises(ZooError, match="a shift of 28 pixels does not fit 28x28 images; use 0 to 27"):
        data.random_shift_flip(x, 0, max_shift=28)


def test_data_too_small_for_a_test_split_is_refused_saying_what_to_change(tmp_path):
    np.save(tmp_path / "one.npy", np.full((1, 8, 8), 0.5, "float32"))
    with pytest.raises(ZooError, match="one gives 1 training and 0 test examples; each split needs at least one"):
        data.load(str(tmp_path / "one.npy"))
    rows = ["time,value"] + [f"{i},{np.sin(i / 5)}" for i in range(100)]  # test part: the last 20 steps
    (tmp_path / "short.csv").write_text("\n".join(rows))
    with pytest.raises(ZooError, match=r"the last 20 of 100 steps\) is shorter than one window of 32 steps; set data.window=20"):
        data.load(str(tmp_path / "short.csv"))
    assert len(data.load(str(tmp_path / "short.csv"), window=20).x_test) == 1


def test_missing_path_and_unknown_kind(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        data.load(str(tmp_path / "missing.csv"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ZooError, match="cannot read"):
        data.load(str(tmp_path / "notes.txt"))
