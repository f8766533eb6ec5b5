"""Natural-image patches from scikit-learn's bundled photographs."""

import json

import numpy as np
import pytest

from jaxode_diffusion.training.data import load_dataset, load_patches


@pytest.mark.parametrize("size", [16, 32])
def test_patch_shapes_and_range(size):
    ds = load_dataset(f"patches{size}")
    assert ds.kind == "image"
    assert ds.train.shape[1:] == (size, size, 3) and ds.heldout.shape[1:] == (size, size, 3)
    assert ds.train.dtype == np.float32
    assert ds.train.min() >= -1.0 and ds.train.max() <= 1.0
    # The photographs use most of the 0..255 range.
    assert ds.train.min() < -0.9 and ds.train.max() > 0.9
    meta = ds.meta
    assert meta["name"] == f"patches{size}" and meta["event_shape"] == [size, size, 3]
    raw = ds.unnormalize(ds.train[:4])
    assert raw.min() >= 0 and raw.max() <= 255
    np.testing.assert_allclose(raw, np.round(raw), atol=1e-3)  # back to integer pixel values
    json.dumps(meta)  # recorded in the run config as JSON


def test_patches_are_cut_from_the_photographs():
    from sklearn.datasets import load_sample_images

    img = load_sample_images().images[0]  # china.jpg: first patches, row-major
    ds = load_patches(16, stride=8)
    np.testing.assert_array_equal(ds.unnormalize(ds.train[0]).round().astype(np.uint8), img[:16, :16])
    np.testing.assert_array_equal(ds.unnormalize(ds.train[1]).round().astype(np.uint8), img[:16, 8:24])
    np.testing.assert_array_equal(ds.unnormalize(ds.heldout[0]).round().astype(np.uint8), img[:16, 320:336])


def test_split_is_disjoint_by_region():
    # Training windows tile columns [0, 320) only (count), held-out ones [320, 640).
    ds = load_patches(32, stride=16)
    n_per_row_train = (320 - 32) // 16 + 1
    n_rows = (427 - 32) // 16 + 1
    assert ds.train.shape[0] == 2 * n_rows * n_per_row_train == ds.meta["n_train"]
    # No held-out patch equals any training patch (exact-bytes hashes).
    train_h = {p.tobytes() for p in ds.train}
    assert not any(p.tobytes() in train_h for p in ds.heldout)
    assert "columns [0, 320)" in ds.meta["split"]


def test_patches_deterministic():
    a, b = load_patches(16, stride=32), load_patches(16, stride=32)
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.heldout, b.heldout)
    assert a.meta == b.meta


@pytest.mark.parametrize("kw", [dict(size=1), dict(size=400), dict(size=16, stride=0)])
def test_patches_bad_arguments(kw):
    with pytest.raises(ValueError, match="size|stride"):
        load_patches(**kw)


def test_stripes_split_is_disjoint_and_named():
    # Alternating 64-pixel column stripes: windows lie inside one stripe; 5 train + 5 held-out
    # stripes per 640-pixel image.
    ds = load_patches(16, stride=16, split="stripes")
    per_stripe = ((427 - 16) // 16 + 1) * ((64 - 16) // 16 + 1)
    assert ds.train.shape[0] == ds.heldout.shape[0] == 2 * 5 * per_stripe
    train_h = {p.tobytes() for p in ds.train}
    assert not any(p.tobytes() in train_h for p in ds.heldout)
    assert "stripes" in ds.meta["split"] and ds.meta["name"] == "patches16-stripes"
    from sklearn.datasets import load_sample_images

    img = load_sample_images().images[0]
    np.testing.assert_array_equal(ds.unnormalize(ds.heldout[0]).round().astype(np.uint8), img[:16, 64:80])
    assert load_dataset("patches16-stripes").meta["name"] == "patches16-stripes"
    with pytest.raises(ValueError, match="split"):
        load_patches(16, split="rows")
    with pytest.raises(ValueError, match="stripe"):
        load_patches(32, split="stripes", stripe=16)
