"""Compression: a VQ-VAE's codebook indices as an image format, against JPEG, WebP and 8-bit PCA codes.

An image's file is its grid of indices, arithmetic-coded with one frequency table per grid cell
learned on the training set (Laplace-smoothed counts). The tables, like the codebook and the
decoder, belong to the shared model; an image's bytes are its coded stream alone: the grid's
shape is the model's, and the decoder stops after that many indices, so no header is needed
(the stream's length is the file's, as for JPEG and WebP files). The zlib-compressed packed
indices and the packed indices themselves are reported beside it.

Baselines on the same test images: JPEG and WebP whole files written by Pillow over a sweep of
quality settings, and PCA codes quantised to 8 bits (one byte per component; the range of each
component is learned on the training codes). Every method is scored by PSNR and SSIM of the
decoded images; the rate-distortion plot draws bytes per image against PSNR.
"""

import bisect
import io
import zlib

import numpy as np
from sklearn.decomposition import PCA

from recipes.engine.evaluation import batches, first_examples, psnr, ssim
from recipes.engine.report import Results, image_grid, pyplot, save_figure
from zoo.errors import ZooError

CODE_BITS = 32
FULL = (1 << CODE_BITS) - 1
HALF = 1 << (CODE_BITS - 1)
QUARTER = 1 << (CODE_BITS - 2)
FREQUENCY_TOTAL = 1 << 16  # each table's total: well under QUARTER, so every code keeps a non-empty interval
FIT_LIMIT = 10_000  # streamed data: training images the frequency tables and PCA are fitted on
CODED = "VQ-VAE, arithmetic-coded indices"
PILLOW_FORMATS = {"JPEG": "jpeg_qualities", "WebP": "webp_qualities"}
MEASURES = ("bytes per image", "PSNR (dB)", "SSIM")


class FrequencyTables:
    """Cumulative frequencies of the codebook indices, one table per grid cell, from training counts
    (Laplace-smoothed: every index keeps a code) scaled to about FREQUENCY_TOTAL."""

    def __init__(self, counts):
        counts = np.asarray(counts, "float64") + 1
        scaled = 1 + np.floor(counts / counts.sum(axis=1, keepdims=True) * (FREQUENCY_TOTAL - counts.shape[1]))
        self.counts = counts - 1
        self.cumulative = [[0, *np.cumsum(row).astype(int).tolist()] for row in scaled]

    @classmethod
    def fit(cls, indices, codebook_size):
        """Tables from training indices (n, *grid)."""
        flat = indices.reshape(len(indices), -1)
        return cls([np.bincount(flat[:, cell], minlength=codebook_size) for cell in range(flat.shape[1])])


def encode_indices(symbols, tables):
    """The bytes of one image's indices (flat, one per grid cell) under `tables`: an integer arithmetic
    coder (Witten, Neal and Cleary 1987); trailing zero bytes are dropped, as the decoder reads zeros past the end."""
    low, high, pending, bits = 0, FULL, 0, []

    def emit(bit):
        nonlocal pending
        bits.append(bit)
        bits.extend([1 - bit] * pending)
        pending = 0

    for symbol, cumulative in zip(symbols, tables.cumulative):
        span, total = high - low + 1, cumulative[-1]
        high = low + span * cumulative[symbol + 1] // total - 1
        low = low + span * cumulative[symbol] // total
        while True:
            if high < HALF:
                emit(0)
            elif low >= HALF:
                emit(1)
                low, high = low - HALF, high - HALF
            elif low >= QUARTER and high < 3 * QUARTER:
                pending += 1
                low, high = low - QUARTER, high - QUARTER
            else:
                break
            low, high = 2 * low, 2 * high + 1
    pending += 1  # two final bits (plus those pending) put every continuation inside [low, high]
    emit(0 if low < QUARTER else 1)
    return np.packbits(np.array(bits, "uint8")).tobytes().rstrip(b"\0")


def decode_indices(data, tables):
    """The flat indices `encode_indices` coded into `data`, one per table."""
    stream = np.unpackbits(np.frombuffer(data, "uint8")).tolist()
    stream += [0] * (CODE_BITS * (len(tables.cumulative) + 1))  # past the end: zeros (a code reads < 32 bits a symbol)
    value, position = int("".join(map(str, stream[:CODE_BITS])), 2), CODE_BITS
    low, high, symbols = 0, FULL, []
    for cumulative in tables.cumulative:
        span, total = high - low + 1, cumulative[-1]
        symbol = bisect.bisect_right(cumulative, ((value - low + 1) * total - 1) // span) - 1
        symbols.append(symbol)
        high = low + span * cumulative[symbol + 1] // total - 1
        low = low + span * cumulative[symbol] // total
        while True:
            if high < HALF:
                pass
            elif low >= HALF:
                low, high, value = low - HALF, high - HALF, value - HALF
            elif low >= QUARTER and high < 3 * QUARTER:
                low, high, value = low - QUARTER, high - QUARTER, value - QUARTER
            else:
                break
            low, high, value = 2 * low, 2 * high + 1, 2 * value + stream[position]
            position += 1
    return np.array(symbols, "int32")


def packed_indices(indices, codebook_size):
    """One image's indices packed at ceil(log2 codebook_size) bits each."""
    width = int(np.ceil(np.log2(codebook_size)))
    bits = (indices.reshape(-1, 1) >> np.arange(width - 1, -1, -1)) & 1
    return np.packbits(bits.astype("uint8")).tobytes()


def model_indices(model, x):
    """The model's codebook indices of x (an array or streamed files), batch by batch."""
    return np.concatenate([np.asarray(model.encode(batch)) for batch in batches(x)])


def decoded_images(model, indices):
    return np.concatenate([np.asarray(model.decode(indices[i : i + 256]), "float32") for i in range(0, len(indices), 256)])


def pillow_round_trip(images, image_format, quality):
    """(mean file bytes, decoded images) of each image written as a whole `image_format` file at `quality`."""
    from PIL import Image

    sizes, decoded = [], []
    for image in images:
        pixels = np.round(np.clip(image, 0, 1) * 255).astype("uint8")
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format=image_format, quality=quality)
        sizes.append(buffer.tell())
        buffer.seek(0)
        mode = "L" if image.shape[-1] == 1 else "RGB"  # WebP decodes grey images as RGB
        decoded.append(np.asarray(Image.open(buffer).convert(mode), "float32").reshape(image.shape) / 255)
    return float(np.mean(sizes)), np.stack(decoded)


def pca_round_trips(train, test, components):
    """{M: decoded test images} of PCA codes with M components quantised to 8 bits over the training codes' range."""
    pca = PCA(max(components), random_state=0).fit(train.reshape(len(train), -1))
    train_codes, test_codes = pca.transform(train.reshape(len(train), -1)), pca.transform(test.reshape(len(test), -1))
    low, high = train_codes.min(axis=0), train_codes.max(axis=0)
    steps = np.round((np.clip(test_codes, low, high) - low) / (high - low) * 255)  # the byte of each component
    codes = low + steps / 255 * (high - low)
    return {m: np.clip(codes[:, :m] @ pca.components_[:m] + pca.mean_, 0, 1).reshape(test.shape) for m in components}


def check_settings(ctx, data):
    """One-line errors for a model or data the recipe cannot code, and empty or impossible sweeps, before training."""
    if ctx.model_name != "vq_vae":
        raise ZooError(f"compress codes a VQ-VAE's indices: the model must be vq_vae, got {ctx.model_name}; drop --model")
    if data.x_train.ndim != 4 or data.input_shape[-1] not in (1, 3):
        raise ZooError(f"compress codes grey or RGB images (H, W, 1 or 3), got examples of shape {data.input_shape}")
    for key in ("jpeg_qualities", "webp_qualities", "pca_components"):
        if not ctx.params[key]:
            raise ZooError(f"params.{key} is empty; give at least one setting, e.g. --set params.{key}=[10]")
    most = min(int(np.prod(data.input_shape)), len(data.x_train[:FIT_LIMIT]))
    if max(ctx.params["pca_components"]) > most:
        raise ZooError(f"params.pca_components asks for {max(ctx.params['pca_components'])} components; at most {most} "
                       "(pixels per image and training images bound it)")


def coded_streams(model, data, test_indices):
    """(frequency tables, coded stream per test image), each stream checked to decode to its indices."""
    train = first_examples(data.x_train, FIT_LIMIT)[0] if data.streaming else data.x_train
    tables = FrequencyTables.fit(model_indices(model, train), model.codebook_size)
    streams = [encode_indices(row.ravel().tolist(), tables) for row in test_indices]
    for stream, row in zip(streams, test_indices):
        if not np.array_equal(decode_indices(stream, tables), row.ravel()):
            raise RuntimeError("the arithmetic coder did not decode an image's indices back")
    return tables, streams


def save_streams(run_dir, tables, streams):
    """coded.npz: the frequency counts (shared) and every test image's stream (offsets into one buffer)."""
    offsets = np.cumsum([0, *map(len, streams)])
    np.savez(run_dir / "coded.npz", counts=tables.counts, streams=np.frombuffer(b"".join(streams), "uint8"), offsets=offsets)


def rate_distortion_plot(run_dir, rows):
    """Bytes per image (log scale) against PSNR: one line per baseline family, the VQ-VAE as points."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for family, marker in (("JPEG", "s-"), ("WebP", "^-"), ("PCA", "o-")):
        points = sorted((v["bytes per image"], v["PSNR (dB)"]) for name, v in rows.items() if name.startswith(family))
        ax.plot(*zip(*points), marker, label=family if family != "PCA" else "PCA, 8-bit codes", markersize=4)
    for name, v in rows.items():
        if name.startswith("VQ-VAE"):
            ax.plot(v["bytes per image"], v["PSNR (dB)"], "*" if name == CODED else "x", markersize=11 if name == CODED else 7,
                    label=name)
    ax.set_xscale("log")
    ax.set_xlabel("bytes per image")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, run_dir, "rate_distortion")


def run(ctx):
    data = ctx.load_data()
    check_settings(ctx, data)
    model, _ = ctx.train(ctx.build_model(data.input_shape), data.x_train)
    ctx.model = model
    results = Results()
    clean, scored = first_examples(data.x_test, ctx.params["eval_examples"])
    test_indices = model_indices(model, clean)
    tables, streams = coded_streams(model, data, test_indices)
    save_streams(ctx.run_dir, tables, streams)
    reconstructed = decoded_images(model, test_indices)
    vq_scores = {"PSNR (dB)": psnr(clean, reconstructed), "SSIM": ssim(clean, reconstructed)}
    grid = "x".join(map(str, model.index_shape))
    rows = {
        CODED: {"bytes per image": float(np.mean([len(s) for s in streams])), **vq_scores},
        "VQ-VAE, zlib of packed indices": {
            "bytes per image": float(np.mean([len(zlib.compress(packed_indices(r, model.codebook_size), 9)) for r in test_indices])),
            **vq_scores},
        "VQ-VAE, packed indices": {"bytes per image": len(packed_indices(test_indices[0], model.codebook_size)), **vq_scores},
    }
    decoded = {"VQ-VAE": reconstructed}
    for image_format, key in PILLOW_FORMATS.items():
        for quality in ctx.params[key]:
            size, images = pillow_round_trip(clean, image_format, quality)
            rows[f"{image_format} quality {quality}"] = {"bytes per image": size, "PSNR (dB)": psnr(clean, images), "SSIM": ssim(clean, images)}
            decoded.setdefault(image_format, images)  # the grid shows the first setting listed
    train = first_examples(data.x_train, FIT_LIMIT)[0]
    for m, images in pca_round_trips(train, clean, ctx.params["pca_components"]).items():
        rows[f"PCA {m} components, 8-bit"] = {"bytes per image": m, "PSNR (dB)": psnr(clean, images), "SSIM": ssim(clean, images)}
        decoded.setdefault("PCA", images)
    for name, values in rows.items():
        results.add(name, values)
    results.notes += comparison_notes(rows) + [
        f"every method is scored on {scored}",
        f"VQ-VAE: a {grid} grid of indices into {model.codebook_size} codes; arithmetic-coded with one frequency table "
        f"per grid cell learned on {len(train):,} training images (part of the shared model, like the codebook): "
        "no per-image header; zlib (level 9) and plain packing of the same indices for comparison",
        "JPEG and WebP: whole files written by Pillow (headers included); PCA: one byte per component "
        "(each quantised to 256 levels over its training range)",
    ]
    results.plots.append(rate_distortion_plot(ctx.run_dir, rows))
    results.plots.append(image_grid(ctx.run_dir, "compress_grid", [("original", clean)] + [(k, v) for k, v in decoded.items()]))
    return results, data


def comparison_notes(rows):
    """For each baseline family, its best PSNR at no more bytes per image than the coded VQ-VAE indices."""
    ours = rows[CODED]
    notes = []
    for family in ("JPEG", "WebP", "PCA"):
        within = [(v["PSNR (dB)"], name) for name, v in rows.items() if name.startswith(family) and v["bytes per image"] <= ours["bytes per image"]]
        if within:
            best, name = max(within)
            notes.append(f"best {family} at <= {ours['bytes per image']:.1f} bytes: {name}, {best:.2f} dB "
                         f"(VQ-VAE {ours['PSNR (dB)']:.2f} dB)")
        else:
            notes.append(f"no {family} setting listed reaches {ours['bytes per image']:.1f} bytes per image or fewer")
    return notes
