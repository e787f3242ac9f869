import numpy as np
import pytest
import torch
from deepscope import data


def test_digits_split_is_fixed_disjoint_and_scaled():
    x, y = data.digits("train")
    xt, yt = data.digits("test")
    xa, ya = data.digits("all")
    assert x.shape == (1400, 1, 8, 8) and xt.shape == (397, 1, 8, 8) and xa.shape[0] == 1797
    assert x.dtype == torch.float32 and y.dtype == torch.long
    assert 0 <= float(x.min()) and float(x.max()) == 1.0
    assert torch.bincount(yt, minlength=10).min() >= 30  # every class is in the test split
    rows = {tuple(r.tolist()) + (int(c),) for r, c in zip(x.flatten(1), y)}
    test_rows = [tuple(r.tolist()) + (int(c),) for r, c in zip(xt.flatten(1), yt)]
    assert sum(r in rows for r in test_rows) <= 5  # only exact duplicate images may repeat
    x2, y2 = data.digits("train")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    flat, _ = data.digits("test", flatten=True, dtype=torch.float64)
    assert flat.shape == (397, 64) and flat.dtype == torch.float64


def test_digits_rejects_unknown_split():
    with pytest.raises(ValueError, match="digits: `split` must be one of 'train', 'test', 'all'"):
        data.digits("validation")


def test_block_digits_ground_truth():
    b = data.block_digits("test", seed=3)
    images, labels = data.digits("test")
    assert b.x.shape == (397, 1, 16, 8) and b.mask.dtype == torch.bool
    assert torch.equal(b.y, labels)
    # The masked block is exactly the digit; the other block is the same patch for everyone.
    assert torch.equal(b.x[b.mask].view(-1, 8, 8), images[:, 0])
    patch = torch.from_numpy(data.null_patch())
    assert torch.equal(b.x[~b.mask].view(-1, 8, 8), patch.expand(397, 8, 8))
    assert torch.equal(b.mask[:, 0, 0, 0], b.top)
    assert 0.4 < b.top.float().mean() < 0.6
    # Placement is random per image but repeatable per seed.
    assert torch.equal(data.block_digits("test", seed=3).x, b.x)
    assert not torch.equal(data.block_digits("test", seed=4).top, b.top)


def test_block_digits_noise_and_subsample():
    b = data.block_digits(n=3000, seed=0, noise=0.1)
    assert b.x.shape[0] == 3000
    clean = data.block_digits(n=3000, seed=0)
    assert torch.equal(b.mask, clean.mask)
    assert abs(float((b.x - clean.x).std()) - 0.1) < 0.005
    with pytest.raises(ValueError, match="`noise` must be >= 0"):
        data.block_digits(noise=-1.0)
    with pytest.raises(TypeError, match="`n` must be an int"):
        data.block_digits(n=2.5)


def _ink_box(tile):
    rows, cols = np.nonzero(tile)
    return rows.min(), cols.min(), rows.max() + 1, cols.max() + 1


def test_digit_canvas_box_holds_all_ink_and_nothing_else_does():
    c = data.digit_canvas("test", size=24, scale=2, seed=5)
    images, labels = data.digits("test")
    assert c.x.shape == (397, 1, 24, 24) and torch.equal(c.y, labels)
    assert c.marker_boxes is None and c.marker_class is None
    assert float(c.x[~c.mask].abs().max()) == 0.0
    for i in range(0, 397, 13):
        t, l, b, r = c.boxes[i].tolist()
        crop = c.x[i, 0, t:b, l:r].numpy()
        tile = np.kron(images[i, 0].numpy(), np.ones((2, 2), dtype=np.float32))
        t0, l0, b0, r0 = _ink_box(tile)
        assert np.array_equal(crop, tile[t0:b0, l0:r0])  # the box is the tight ink box
        assert c.mask[i, 0].sum() == (b - t) * (r - l)


def test_digit_canvas_distractors_stay_outside_the_box():
    clean = data.digit_canvas(n=300, size=28, scale=2, seed=1)
    busy = data.digit_canvas(n=300, size=28, scale=2, distractors=5, seed=1)
    assert torch.equal(clean.boxes, busy.boxes)
    assert torch.equal(busy.x[busy.mask], clean.x[clean.mask])  # nothing added inside a box
    assert float(busy.x[~busy.mask].sum()) > 0  # but there is clutter outside


def test_digit_canvas_marker_encodes_the_label():
    c = data.digit_canvas(n=2000, size=24, scale=2, marker=0.8, seed=2)
    agree = (c.marker_class == c.y).float().mean()
    assert 0.78 < agree < 0.86  # 0.8 + 0.2 * 1/10 expected
    assert torch.all(c.boxes[:, 0] >= data.MARKER_BAND)  # digits sit below the marker band
    for i in range(0, 2000, 97):
        t, l, b, r = c.marker_boxes[i].tolist()
        assert torch.all(c.x[i, 0, t:b, l:r] == 1.0)
    shifted = data.digit_canvas(n=500, size=24, scale=2, marker=1.0, marker_offset=1, seed=2)
    assert torch.equal(shifted.marker_class, (shifted.y + 1) % 10)


def test_mnist_tiles_keep_every_ink_pixel_of_nearly_all_digits():
    full, labels = data.mnist("test")
    tiles, tile_labels = data._source_split("mnist", "test", "t")
    assert tiles.shape == (1000, data.MNIST_TILE, data.MNIST_TILE) and tiles.dtype == np.float32
    assert np.array_equal(tile_labels, labels.numpy())
    ink_full = full.flatten(1).sum(1).numpy()
    kept = tiles.reshape(1000, -1).sum(1) / ink_full
    assert kept.min() > 0.97  # at worst a faint anti-aliased edge row is cut
    assert (kept > 1 - 1e-5).mean() > 0.95


def test_block_digits_from_mnist():
    b = data.block_digits("test", n=50, seed=3, source="mnist")
    h = data.MNIST_TILE
    assert b.x.shape == (50, 1, 2 * h, h) and b.mask.shape == b.x.shape
    patch = torch.from_numpy(data.null_patch(h))
    assert torch.equal(b.x[~b.mask].view(-1, h, h), patch.expand(50, h, h))
    assert float(b.x[b.mask].view(-1, h * h).sum(1).min()) > 10  # the digit block holds ink
    assert data.null_patch(8).shape == (8, 8)
    with pytest.raises(ValueError, match="block_digits: `source` must be one of 'digits', "
                       "'mnist'"):
        data.block_digits(source="fashion")


def test_digit_canvas_from_mnist_boxes_distractors_and_markers():
    clean = data.digit_canvas("test", n=120, size=32, seed=4, source="mnist")
    busy = data.digit_canvas("test", n=120, size=32, distractors=4, seed=4, source="mnist")
    tiles, _ = data._source_split("mnist", "test", "t")
    assert clean.x.shape == (120, 1, 32, 32)
    assert float(clean.x[~clean.mask].abs().max()) == 0.0  # the box holds all the ink
    assert torch.equal(clean.boxes, busy.boxes)
    assert torch.equal(busy.x[busy.mask], clean.x[clean.mask])
    assert float(busy.x[~busy.mask].sum()) > 0
    marked = data.digit_canvas(n=300, size=32, marker=1.0, seed=2, source="mnist")
    assert torch.equal(marked.marker_class, marked.y)
    assert torch.all(marked.boxes[:, 0] >= data.MARKER_BAND)
    with pytest.raises(ValueError, match="`size` must be >= 20 to hold a 20x1-pixel digit"):
        data.digit_canvas(n=2, size=16, source="mnist")
    twice = data.digit_canvas(n=2, size=40, scale=2, source="mnist")
    assert twice.x.shape == (2, 1, 40, 40)


@pytest.mark.parametrize("kwargs, err, msg", [
    ({"size": 10}, ValueError, "`size` must be >= 16"),
    ({"size": 20, "marker": 0.5}, ValueError, "`size` must be >= 21"),
    ({"size": 25, "scale": 3, "marker": 0.5}, ValueError, "below the marker band"),
    ({"marker": 1.5}, ValueError, "probability in \\[0, 1\\]"),
    ({"scale": 0}, ValueError, "`scale` must be >= 1"),
    ({"distractors": -1}, ValueError, "`distractors` must be >= 0"),
])
def test_digit_canvas_bad_input(kwargs, err, msg):
    with pytest.raises(err, match=msg):
        data.digit_canvas(n=2, **kwargs)


def test_registry_verifies_files(tmp_path, monkeypatch):
    name = "chinchilla_svg_extracted_data.csv"
    path = data.data_path(name)
    assert data.sha256_of(path) == data.REGISTRY[name][0]
    assert path.stat().st_size == data.REGISTRY[name][1]
    with pytest.raises(KeyError, match="not a registered data file"):
        data.data_path("nope.csv")
    monkeypatch.setenv("DEEPSCOPE_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="registered but missing"):
        data.data_path(name)
    altered = tmp_path / name
    altered.write_bytes(path.read_bytes()[:-10])  # truncated
    with pytest.raises(data.DataIntegrityError, match="was altered or truncated"):
        data.data_path(name)
    assert data.data_path(name, verify=False) == altered


def test_chinchilla_points():
    full = data.load_chinchilla_points(drop_outliers=False)
    kept = data.load_chinchilla_points()
    assert len(full["loss"]) == 245 and len(kept["loss"]) == 240
    np.testing.assert_allclose(kept["D"], kept["C"] / (6 * kept["N"]))
    dropped = np.sort(full["loss"])[-5:]
    assert kept["loss"].max() < dropped.min()
    assert set(kept) == {"N", "C", "D", "loss"}
    assert np.all(kept["N"] > 1e7) and np.all(kept["loss"] > 1.5)


def test_mnist_split_is_fixed_stratified_disjoint_and_scaled():
    x, y = data.mnist("train")
    xt, yt = data.mnist("test")
    xa, ya = data.mnist("all")
    assert x.shape == (4000, 1, 28, 28) and xt.shape == (1000, 1, 28, 28)
    assert xa.shape == (5000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.equal(torch.bincount(y), torch.full((10,), 400))
    assert torch.equal(torch.bincount(yt), torch.full((10,), 100))
    assert 0.0 <= float(x.min()) and float(x.max()) == 1.0
    # Disjoint: no test image equals a train image (MNIST has no exact duplicates here).
    train_rows = {row.numpy().tobytes() for row in (x.flatten(1) * 255).round().to(torch.uint8)}
    assert not any(r.numpy().tobytes() in train_rows
                   for r in (xt.flatten(1) * 255).round().to(torch.uint8))
    # Fixed, and independent of the global RNG.
    torch.manual_seed(123)
    np.random.seed(123)
    x2, y2 = data.mnist("train")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # Classes interleaved: a prefix of 200 holds every class.
    head, yh = data.mnist("train", n=200, flatten=True, dtype=torch.float64)
    assert head.shape == (200, 784) and head.dtype == torch.float64
    assert torch.equal(head, x[:200].flatten(1).double()) and len(set(yh.tolist())) == 10


@pytest.mark.parametrize("kwargs, err, msg", [
    ({"split": "val"}, ValueError, "mnist: `split` must be one of 'train', 'test', 'all'"),
    ({"n": 0}, ValueError, "mnist: `n` must be >= 1, got 0"),
    ({"n": 5000}, ValueError, "mnist: `n` must be at most 4000 for split 'train', got 5000"),
    ({"n": 2.0}, TypeError, "mnist: `n` must be an int, got float"),
])
def test_mnist_bad_input(kwargs, err, msg):
    with pytest.raises(err, match=msg):
        data.mnist(**kwargs)


def test_mnist_refuses_an_altered_file(tmp_path, monkeypatch):
    import shutil

    shutil.copy(data.data_path("mnist_5k.csv.gz"), tmp_path / "mnist_5k.csv.gz")
    with open(tmp_path / "mnist_5k.csv.gz", "r+b") as handle:  # flip one byte
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setenv("DEEPSCOPE_DATA", str(tmp_path))
    data._mnist_numpy.cache_clear()
    try:
        with pytest.raises(data.DataIntegrityError, match="mnist_5k.csv.gz has sha256"):
            data.mnist("test")
    finally:
        data._mnist_numpy.cache_clear()
