"""Training data: 2-D toys, Gaussian mixtures, scikit-learn's bundled digits, user ``.npy`` arrays.

Everything is generated or ships with an installed package (no downloads). :func:`load_dataset`
is the one entry point used by the trainer and the CLI; it returns a :class:`Dataset` whose
``meta`` records how the arrays were normalised (``x_model = (x_raw - shift) / scale``) so that
samples can be mapped back with :meth:`Dataset.unnormalize` / :func:`unnormalize`.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.models.mixture import GaussianMixture

__all__ = [
    "TOYS",
    "Dataset",
    "make_toy",
    "toy_names",
    "gmm_samples",
    "default_gmm",
    "load_digits",
    "load_patches",
    "PATCH_SIZES",
    "load_npy",
    "load_dataset",
    "unnormalize",
    "check_finite",
    "dataset_labels",
]


def _key(key_or_seed):
    if isinstance(key_or_seed, (int, np.integer)):
        return jax.random.key(int(key_or_seed))
    key = jnp.asarray(key_or_seed) if not isinstance(key_or_seed, jax.Array) else key_or_seed
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key.astype(jnp.uint32))


def _checkerboard(key, n):
    # FFJORD (Grathwohl et al. 2019) toy: alternate unit squares of [-4, 4]^2.
    k1, k2, k3 = jax.random.split(key, 3)
    x1 = jax.random.uniform(k1, (n,)) * 4 - 2
    x2_ = jax.random.uniform(k2, (n,)) - jax.random.randint(k3, (n,), 0, 2) * 2
    x2 = x2_ + jnp.floor(x1) % 2
    return jnp.stack([x1, x2], -1) * 2


def _two_moons(key, n):
    k1, k2, k3 = jax.random.split(key, 3)
    s = jax.random.uniform(k1, (n,)) * jnp.pi
    upper = jax.random.bernoulli(k2, 0.5, (n,))
    x = jnp.where(upper, jnp.cos(s), 1 - jnp.cos(s))
    y = jnp.where(upper, jnp.sin(s), 0.5 - jnp.sin(s))
    pts = jnp.stack([x - 0.5, y - 0.25], -1) * 2
    return pts + 0.1 * jax.random.normal(k3, (n, 2))


def _rings(key, n):
    # Four concentric circles of radius 1..4 (scaled by 0.9), thin Gaussian noise.
    k1, k2, k3 = jax.random.split(key, 3)
    r = (jax.random.randint(k1, (n,), 1, 5).astype(jnp.float32)) * 0.9
    a = jax.random.uniform(k2, (n,)) * 2 * jnp.pi
    return jnp.stack([r * jnp.cos(a), r * jnp.sin(a)], -1) + 0.08 * jax.random.normal(k3, (n, 2))


def _swiss_roll(key, n):
    k1, k2 = jax.random.split(key)
    s = 1.5 * jnp.pi * (1 + 2 * jax.random.uniform(k1, (n,)))
    pts = jnp.stack([s * jnp.cos(s), s * jnp.sin(s)], -1) / 5.0
    return pts + 0.1 * jax.random.normal(k2, (n, 2))


def default_gmm(dim: int = 2) -> GaussianMixture:
    """The mixture behind ``"gmm"`` / ``"eight_gaussians"``: 8 Gaussians on a ring of radius 2
    (std 0.2) in 2-D; in other dimensions a fixed random 8-component mixture (seed 0)."""
    if dim == 2:
        return GaussianMixture.ring(8, radius=2.0, std=0.2)
    return GaussianMixture.random(jax.random.key(0), 8, dim)


def _eight_gaussians(key, n):
    return default_gmm(2).sample(key, n)


TOYS = {
    "checkerboard": _checkerboard,
    "two_moons": _two_moons,
    "rings": _rings,
    "swiss_roll": _swiss_roll,
    "eight_gaussians": _eight_gaussians,
}


def toy_names() -> list[str]:
    return sorted(TOYS)


def make_toy(name: str, key_or_seed, n: int) -> np.ndarray:
    """``n`` samples ``(n, 2)`` float32 of a 2-D toy distribution.

    Args:
        name: ``checkerboard``, ``two_moons``, ``rings``, ``swiss_roll`` or ``eight_gaussians``.
        key_or_seed: a JAX PRNG key or an integer seed.
        n: number of samples.

    Raises:
        ValueError: on an unknown name or ``n < 1``.

    Example:
        >>> make_toy("two_moons", 0, 5).shape
        (5, 2)
    """
    if name not in TOYS:
        raise ValueError(f"unknown toy {name!r}; choose one of {toy_names()}.")
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    # One jit per (toy, n): a single compilation instead of one per eager op.
    fn = jax.jit(TOYS[name], static_argnums=1)
    return np.asarray(fn(_key(key_or_seed), int(n)), dtype=np.float32)


def gmm_samples(key_or_seed, n: int, dim: int = 2, mixture: GaussianMixture | None = None) -> np.ndarray:
    """``n`` samples of a Gaussian mixture in any dimension (default :func:`default_gmm`)."""
    mixture = default_gmm(dim) if mixture is None else mixture
    fn = jax.jit(lambda m, k: m.sample(k, int(n)))
    return np.asarray(fn(mixture, _key(key_or_seed)), dtype=np.float32)


class Dataset(NamedTuple):
    """Train and held-out arrays in model coordinates.

    Attributes:
        train: ``(N, d)`` or ``(N, H, W, C)`` float32.
        heldout: same trailing shape.
        kind: ``"vector"`` or ``"image"``.
        meta: JSON-able dict: ``name``, ``event_shape``, ``shift``, ``scale`` (``x_model =
            (x_raw - shift) / scale``; scalars or per-feature lists), ``sigma_data``.
    """

    train: np.ndarray
    heldout: np.ndarray
    kind: str
    meta: dict[str, Any]

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    def unnormalize(self, x):
        """Map model-space samples back to the raw data's units."""
        return unnormalize(x, self.meta)


def unnormalize(x, meta: dict[str, Any]) -> np.ndarray:
    """``x_raw = x * scale + shift`` with the statistics stored in ``meta``."""
    x = np.asarray(x)
    scale = np.asarray(meta.get("scale", 1.0), dtype=x.dtype)
    shift = np.asarray(meta.get("shift", 0.0), dtype=x.dtype)
    return x * scale + shift


def check_finite(x, what: str = "data") -> None:
    """Raise ``ValueError`` naming the first non-finite row of ``x``.

    Example:
        >>> check_finite(np.zeros((2, 2)))
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{what} must be a real numeric array, got dtype {x.dtype}.")
    bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1) if x.ndim >= 1 and x.size else np.zeros(0, bool)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{what} contains non-finite values (NaN or inf) in {rows.size} of {x.shape[0]} rows, "
            f"first at row {int(rows[0])}; remove or impute those rows before training."
        )


def _split(x: np.ndarray, heldout_fraction: float, seed: int):
    # A fixed permutation (seed 0 by default) so the held-out set never changes between runs.
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    n_held = max(1, int(round(heldout_fraction * x.shape[0])))
    return x[perm[n_held:]], x[perm[:n_held]]


def load_digits(heldout_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images) as ``(N, 8, 8, 1)`` in ``[-1, 1]``.

    The split is a fixed permutation (``seed``): 1438 train / 359 held-out by default.
    ``meta["labels_train"]`` / ``meta["labels_heldout"]`` hold the class labels.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0) * 2.0 - 1.0  # pixel values are 0..16
    x = x[..., None]
    idx_train, idx_held = _split(np.arange(x.shape[0]), heldout_fraction, seed)
    meta = dict(
        name="digits",
        event_shape=[8, 8, 1],
        shift=0.0,
        scale=1.0,
        sigma_data=0.5,
        raw_range=[-1.0, 1.0],
        labels_train=bunch.target[idx_train].tolist(),
        labels_heldout=bunch.target[idx_held].tolist(),
        num_classes=10,
    )
    return Dataset(x[idx_train], x[idx_held], "image", meta)


# Patch sizes accepted by ``--data patchesN`` (load_patches takes any size up to 320).
PATCH_SIZES = (16, 32)


def _cut_patches(region: np.ndarray, size: int, stride: int) -> np.ndarray:
    # All size x size windows whose top-left corner lies on the stride lattice, row-major.
    win = np.lib.stride_tricks.sliding_window_view(region, (size, size), axis=(0, 1))
    win = win[::stride, ::stride]  # (nr, nc, C, size, size)
    return np.ascontiguousarray(win.transpose(0, 1, 3, 4, 2).reshape(-1, size, size, region.shape[-1]))


def load_patches(size: int = 32, *, stride: int = 4, split: str = "halves", stripe: int = 64) -> Dataset:
    """Natural-image patches ``(N, size, size, 3)`` in ``[-1, 1]`` from scikit-learn's two
    bundled photographs (``china.jpg`` and ``flower.jpg``, 427 x 640 RGB; no download).

    The split is by source region, so no pixel is shared between train and held-out: training
    patches are cut from the left half of each photograph (columns ``[0, 320)``), held-out
    patches from the right half (columns ``[320, 640)``). Windows start on a lattice of step
    ``stride`` (default 4 pixels: overlapping windows, a built-in translation augmentation),
    row-major, china first: the arrays are the same on every call. Pixels are mapped
    ``x = (v - 127.5) / 127.5`` from ``v`` in ``0..255``; ``meta`` records it (``shift = scale =
    127.5``, ``raw_range = [0, 255]``) and the split.

    ``split="stripes"`` (``--data patches32-stripes``) instead cuts each photograph into
    ``stripe``-pixel column stripes and alternates them (even stripes train, odd ones held-out),
    windows lying inside one stripe: still no shared pixel, but train and held-out now sample the
    same scenes (the two halves differ in mean colour), so a sample distance to held-out patches
    measures the model rather than the shift between the halves.

    Args:
        size: patch side in pixels, ``2 <= size <= 320`` (``16`` and ``32`` are the CLI's
            ``--data patches16`` / ``patches32``).
        stride: step between window corners in pixels (default 4).
        split: ``"halves"`` (default) or ``"stripes"``.
        stripe: stripe width in pixels for ``split="stripes"`` (``size <= stripe``; default 64).

    Returns:
        a :class:`Dataset` of kind ``"image"``; with the default stride 14454 train and 14454
        held-out patches at 32 x 32, 15862 and 15862 at 16 x 16.

    Raises:
        ValueError: on a size or stride out of range.

    Example:
        >>> ds = load_patches(16, stride=64)
        >>> ds.event_shape, ds.meta["shift"], ds.meta["scale"]
        ((16, 16, 3), 127.5, 127.5)
    """
    from sklearn.datasets import load_sample_images

    size, stride, stripe = _check_patch_args(size, stride, split, stripe)
    bunch = load_sample_images()
    train, held = _cut_split(bunch.images, size, stride, split, stripe)
    to_model = lambda v: ((np.concatenate(v).astype(np.float32) - 127.5) / 127.5).astype(np.float32)
    x_train, x_held = to_model(train), to_model(held)
    names = [os.path.basename(f) for f in bunch.filenames]
    return Dataset(x_train, x_held, "image", _patch_meta(x_train, x_held, names, size, stride, split, stripe))


def _check_patch_args(size, stride, split, stripe) -> tuple[int, int, int]:
    size = int(size)
    if not 2 <= size <= 320:
        raise ValueError(f"load_patches: size must lie in [2, 320] (half an image width), got {size}.")
    stride = int(stride)
    if stride < 1:
        raise ValueError(f"load_patches: stride must be >= 1, got {stride}; use e.g. stride=4.")
    if split not in ("halves", "stripes"):
        raise ValueError(f"load_patches: split must be 'halves' or 'stripes', got {split!r}.")
    stripe = int(stripe)
    if split == "stripes" and not size <= stripe <= 320:
        raise ValueError(f"load_patches: stripe must lie in [size, 320] = [{size}, 320], got {stripe}.")
    return size, stride, stripe


def _cut_split(images, size: int, stride: int, split: str, stripe: int) -> tuple[list, list]:
    """Training and held-out patch arrays, one or more per image (halves, or alternate stripes)."""
    train, held = [], []
    for img in images:
        if split == "stripes":
            for j, c0 in enumerate(range(0, img.shape[1] - stripe + 1, stripe)):
                (train if j % 2 == 0 else held).append(_cut_patches(img[:, c0 : c0 + stripe], size, stride))
            continue
        half = img.shape[1] // 2
        train.append(_cut_patches(img[:, :half], size, stride))
        held.append(_cut_patches(img[:, half:], size, stride))
    return train, held


def _patch_meta(x_train, x_held, names, size, stride, split, stripe) -> dict[str, Any]:
    return dict(
        name=f"patches{size}" + ("-stripes" if split == "stripes" else ""),
        event_shape=[size, size, 3],
        shift=127.5,
        scale=127.5,
        raw_range=[0.0, 255.0],
        normalization="x = (v - 127.5) / 127.5, v in 0..255 -> x in [-1, 1]",
        sigma_data=float(np.clip(x_train.std(), 0.05, 10.0)),
        source=f"sklearn.datasets.load_sample_images: {', '.join(names)}",
        split=(
            f"train: even {stripe}-pixel column stripes of each image; held-out: odd ones"
            if split == "stripes"
            else "train: columns [0, 320) of each image; held-out: columns [320, 640)"
        ),
        stride=stride,
        n_train=int(x_train.shape[0]),
        n_heldout=int(x_held.shape[0]),
    )


def dataset_labels(ds: Dataset) -> tuple[np.ndarray, np.ndarray, int]:
    """``(labels_train, labels_heldout, num_classes)`` of a labelled dataset (int32 arrays).

    Labels travel in ``ds.meta`` (``labels_train``, ``labels_heldout`` and optionally
    ``num_classes``, else ``max label + 1``), as :func:`load_digits` and
    ``from_array(x, labels=...)`` store them.

    Raises:
        ValueError: if the dataset has no labels, they do not match the arrays' lengths or are
            not integers in ``[0, num_classes)``.

    Example:
        >>> tr, he, k = dataset_labels(load_digits())
        >>> tr.shape, he.shape, k
        ((1438,), (359,), 10)
    """
    name = ds.meta.get("name", "data")
    if "labels_train" not in ds.meta or "labels_heldout" not in ds.meta:
        raise ValueError(
            f"dataset {name!r} has no class labels; class-conditional training needs a labelled "
            "dataset: use data='digits' or from_array(x, labels=y)."
        )
    out = []
    for split, arr in (("train", ds.train), ("heldout", ds.heldout)):
        lab = np.asarray(ds.meta[f"labels_{split}"])
        if lab.shape != (arr.shape[0],) or not (lab.size == 0 or np.issubdtype(lab.dtype, np.integer)):
            raise ValueError(
                f"dataset {name!r}: labels_{split} must be {arr.shape[0]} integers (one per example), "
                f"got shape {lab.shape} and dtype {lab.dtype}."
            )
        out.append(lab.astype(np.int32))
    k = int(ds.meta.get("num_classes", max(int(out[0].max(initial=0)), int(out[1].max(initial=0))) + 1))
    for lab in out:
        if lab.size and (lab.min() < 0 or lab.max() >= k):
            raise ValueError(
                f"dataset {name!r}: labels must lie in [0, {k}), got [{lab.min()}, {lab.max()}]; "
                "relabel the classes as 0..K-1."
            )
    return out[0], out[1], k


def load_npy(
    path: str | os.PathLike, *, normalize: bool = True, heldout_fraction: float = 0.1, seed: int = 0
) -> Dataset:
    """Load a user array from ``.npy``: ``(N, d)`` vectors or ``(N, H, W[, C])`` images.

    Vectors are standardised per feature (``shift`` = mean, ``scale`` = std); images are mapped
    affinely from their ``[min, max]`` to ``[-1, 1]``. ``normalize=False`` keeps raw values.

    Raises:
        ValueError: if the file is missing or unreadable, not a ``.npy`` array (an ``np.savez``
            archive, a pickle or another format is named as such), not numeric, not finite, has
            ``ndim < 2`` or ``> 4``, or has fewer than 2 rows.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(
            f"data file {path!r} does not exist; pass the path of a .npy array saved with np.save."
        )
    _check_npy_format(path)
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as err:
        raise ValueError(
            f"could not read {path!r} as a .npy array ({err}); save it with np.save(path, array)."
        ) from err
    return from_array(x, name=path, normalize=normalize, heldout_fraction=heldout_fraction, seed=seed)


def _check_npy_format(path: str) -> None:
    """Name the format of a data file that is not a ``.npy`` array (checked from its first bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as err:
        raise ValueError(f"could not read data file {path!r} ({err}); check the path and its permissions.") from err
    if head.startswith(b"\x93NUMPY"):
        return
    if not head:
        raise ValueError(
            f"data file {path!r} is empty (0 bytes: an interrupted write?); save the array again with "
            "np.save(path, array)."
        )
    if head.startswith(b"PK"):
        names = ""
        try:
            with np.load(path, allow_pickle=False) as z:
                names = f" holding {', '.join(repr(k) for k in z.files)}"
        except Exception:
            pass
        raise ValueError(
            f"data file {path!r} is a zip archive (an np.savez / np.savez_compressed .npz file{names}), not a "
            ".npy array: save the array with np.save(path, array), or pass "
            "np.load(path)[key] to from_array."
        )
    if head[:1] == b"\x80" or head[:2] in (b"(l", b"(d", b"]q", b"}q", b"cn"):
        raise ValueError(
            f"data file {path!r} is a Python pickle, not a .npy array; pickles are not loaded (they can "
            "run code): save the array with np.save(path, array)."
        )
    raise ValueError(
        f"data file {path!r} is not a .npy array (it does not start with the .npy magic "
        f"bytes; starts with {head!r}); save the array with np.save(path, array)."
    )


def from_array(
    x,
    *,
    name: str = "array",
    normalize: bool = True,
    heldout_fraction: float = 0.1,
    seed: int = 0,
    labels=None,
) -> Dataset:
    """Validate and normalise an in-memory array (see :func:`load_npy`).

    ``labels``: optional integer class labels, one per row, split with the rows and stored in
    ``meta`` (``labels_train``, ``labels_heldout``, ``num_classes``) for conditional training.
    """
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)) or x.dtype == np.bool_:
        raise ValueError(f"{name}: data must be a real numeric array, got dtype {x.dtype}.")
    if x.ndim < 2 or x.ndim > 4:
        raise ValueError(
            f"{name}: data must have shape (N, d) for vectors or (N, H, W[, C]) for images; "
            f"got ndim={x.ndim}, shape {x.shape}. Reshape it (e.g. x.reshape(len(x), -1))."
        )
    if x.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 examples, got shape {x.shape}.")
    x = x.astype(np.float32)
    check_finite(x, name)
    if x.ndim == 3:
        x = x[..., None]
    kind = "vector" if x.ndim == 2 else "image"
    if not normalize:
        shift, scale = 0.0, 1.0
    elif kind == "vector":
        shift = x.mean(0)
        scale = x.std(0)
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    else:
        lo, hi = float(x.min()), float(x.max())
        shift, scale = 0.5 * (lo + hi), (0.5 * (hi - lo) or 1.0)
    x = ((x - shift) / scale).astype(np.float32)
    train, held = _split(x, heldout_fraction, seed)
    meta = dict(
        name=str(name),
        event_shape=list(x.shape[1:]),
        shift=np.asarray(shift).tolist(),
        scale=np.asarray(scale).tolist(),
        sigma_data=float(np.clip(train.std(), 0.05, 10.0)),
    )
    if labels is not None:
        y = np.asarray(labels)
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise ValueError(
                f"{name}: labels must be {x.shape[0]} non-negative integers (one per row), got shape "
                f"{y.shape} and dtype {y.dtype}; pass e.g. np.asarray(labels, np.int32)."
            )
        y_train, y_held = _split(y, heldout_fraction, seed)  # same permutation as the rows
        meta.update(
            labels_train=y_train.tolist(), labels_heldout=y_held.tolist(), num_classes=int(y.max()) + 1
        )
    return Dataset(train, held, kind, meta)


def load_dataset(
    name_or_path: str, *, n_train: int = 20000, n_heldout: int = 2000, dim: int = 2, seed: int = 0
) -> Dataset:
    """The training data named by the CLI's ``--data``.

    Args:
        name_or_path: ``gmm``, a toy name (:data:`TOYS`), ``digits``, ``patches16``,
            ``patches32`` (:func:`load_patches`), ``patches16-stripes`` / ``patches32-stripes``
            (``split="stripes"``) or a path ending in ``.npy``.
        n_train, n_heldout: sizes for generated data (toys, ``gmm``).
        dim: dimension of ``gmm``.
        seed: seed for generated data (held-out data uses an independent stream).

    Returns:
        a :class:`Dataset`.

    Raises:
        ValueError: on an unknown name or an invalid file (see :func:`load_npy`).

    Example:
        >>> ds = load_dataset("two_moons", n_train=100, n_heldout=10)
        >>> ds.train.shape, ds.kind
        ((100, 2), 'vector')
    """
    name = str(name_or_path)
    if name.endswith(".npy") or os.path.sep in name:
        return load_npy(name)
    if name == "digits":
        return load_digits()
    if name.startswith("patches") and name[7:].isdigit() and int(name[7:]) in PATCH_SIZES:
        return load_patches(int(name[7:]))
    if name.startswith("patches") and name.endswith("-stripes") and name[7:-8].isdigit() and int(name[7:-8]) in PATCH_SIZES:
        return load_patches(int(name[7:-8]), split="stripes")
    k_train, k_held = jax.random.split(jax.random.key(seed))
    if name == "gmm":
        train, held = gmm_samples(k_train, n_train, dim), gmm_samples(k_held, n_heldout, dim)
    elif name in TOYS:
        train, held = make_toy(name, k_train, n_train), make_toy(name, k_held, n_heldout)
    else:
        raise ValueError(
            f"unknown dataset {name!r}; choose gmm, digits, patches16, patches32, one of {toy_names()} or a path to a .npy file."
        )
    meta = dict(
        name=name,
        event_shape=list(train.shape[1:]),
        shift=0.0,
        scale=1.0,
        sigma_data=float(np.clip(train.std(), 0.05, 10.0)),
    )
    if name == "gmm":
        meta["dim"] = int(dim)
    return Dataset(train, held, "vector", meta)
