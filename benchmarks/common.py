"""Code shared by the benchmark scripts and the tests: k-diffusion's samplers without its package
``__init__``, an exact mixture denoiser in torch, and interleaved timing.

Imported as ``benchmarks.common`` (the scripts run as ``python -m benchmarks.NAME`` from the
repository root; pytest puts the root on ``sys.path``). Importing it loads neither torch nor jax.

``k_diffusion/__init__.py`` imports its whole training stack (models, CLIP evaluation, wandb,
torchvision, ...). The deterministic samplers need only ``k_diffusion/sampling.py`` and the one
helper it takes from ``k_diffusion/utils.py`` (``append_dims``), so :func:`load_sampling` loads
those two files from the installed distribution under a private package name. ``utils.py``
imports ``torchvision.transforms.functional`` at module level for its image helpers, which no
sampler calls; when torchvision is not installed an empty module stands in for that one import
while ``utils.py`` executes, and is removed again afterwards. Everything else is the real code:
torch, scipy (``sample_lms`` integrates its coefficients with ``scipy.integrate.quad``),
torchdiffeq, torchsde, safetensors and Pillow must be installed (the ``test`` extra; k-diffusion
itself goes in with ``pip install --no-deps "k-diffusion==0.1.1.post1"``).

Used by ``tests/solvers/test_kdiffusion_equivalence.py``, ``benchmarks/accuracy_vs_nfe.py`` and
``benchmarks/tune_vs_kdiffusion.py`` (k-diffusion), and by the timing benchmarks
(:func:`time_interleaved`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
import types

K_DIFFUSION_VERSION = "0.1.1.post1"
_PKG = "_kdiffusion_reference"


def available() -> bool:
    """Whether torch and the k-diffusion distribution (with the samplers' imports) can be loaded."""
    try:
        load_sampling()
    except Exception:
        return False
    return True


def load_sampling():
    """Return k-diffusion's ``sampling`` module (loaded once, cached in ``sys.modules``).

    Raises:
        ImportError: torch or k-diffusion (or a dependency of ``sampling.py``) is missing.
    """
    if f"{_PKG}.sampling" in sys.modules:
        return sys.modules[f"{_PKG}.sampling"]
    import torch  # noqa: F401  (fail early with torch's own ImportError)

    spec = importlib.util.find_spec("k_diffusion")  # locates the package without running __init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f'k-diffusion is not installed: pip install --no-deps "k-diffusion=={K_DIFFUSION_VERSION}"'
        )
    root = list(spec.submodule_search_locations)[0]
    pkg = types.ModuleType(_PKG)
    pkg.__path__ = [root]
    sys.modules[_PKG] = pkg
    stubbed = []
    if importlib.util.find_spec("torchvision") is None:
        # Only utils.py's image helpers (never called by a sampler) use this import.
        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
            sys.modules[name] = types.ModuleType(name)
            stubbed.append(name)
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
        sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
    try:
        for sub in ("utils", "sampling"):
            full = f"{_PKG}.{sub}"
            sspec = importlib.util.spec_from_file_location(full, os.path.join(root, f"{sub}.py"))
            mod = importlib.util.module_from_spec(sspec)
            sys.modules[full] = mod
            try:
                sspec.loader.exec_module(mod)
            except Exception:
                del sys.modules[full]
                raise
            setattr(pkg, sub, mod)
    finally:
        for name in stubbed:
            sys.modules.pop(name, None)
    return sys.modules[f"{_PKG}.sampling"]


@contextlib.contextmanager
def torch_float64():
    """Run k-diffusion in float64: its grids and ``dpm_fast`` build tensors with torch's default
    dtype (``get_sigmas_karras``'s ``linspace`` ramp would otherwise be float32, 1e-5 off)."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def mixture_denoiser(weights, means, covs):
    """Exact denoiser ``D(x, s) = E[x0 | x0 + s eps = x]`` of a Gaussian mixture, in torch float64.

    Written independently of the package (posterior mean of each component, weighted by its
    responsibility), for k-diffusion's ``model(x, sigma)`` convention: ``x`` ``(B, d)``, ``sigma``
    ``(B,)``. For a VP-type process ``x_t = alpha x0 + sigma eps`` it is the denoiser of
    ``x / alpha`` at ``s = sigma / alpha``.

    Args:
        weights: ``(K,)``; means: ``(K, d)``; covs: ``(K, d, d)`` or diagonal ``(K, d)``.
    """
    import numpy as np
    import torch

    w = torch.as_tensor(np.array(weights, np.float64))
    w = w / w.sum()
    mu = torch.as_tensor(np.array(means, np.float64))
    c = torch.as_tensor(np.array(covs, np.float64))
    if c.ndim == 2:
        c = torch.diag_embed(c)
    d = mu.shape[1]
    eye = torch.eye(d, dtype=torch.float64)

    def denoise(x, sigma):
        x = x.to(torch.float64)
        s2 = (sigma.to(torch.float64) ** 2)[:, None, None, None]  # (B, 1, 1, 1)
        cov = c[None] + s2 * eye  # (B, K, d, d): covariance of x given component k
        chol = torch.linalg.cholesky(cov)
        diff = (x[:, None, :] - mu[None])[..., None]  # (B, K, d, 1)
        sol = torch.cholesky_solve(diff, chol)  # cov^{-1} (x - mu_k)
        maha = (diff * sol).sum((-2, -1))
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        logp = torch.log(w)[None] - 0.5 * (maha + logdet)
        resp = torch.softmax(logp, dim=1)  # (B, K)
        post = mu[None] + (c[None] @ sol)[..., 0]  # mu_k + C_k cov^{-1} (x - mu_k)
        return (resp[..., None] * post).sum(1)

    return denoise


def time_interleaved(fns, repeats: int) -> list[float]:
    """Median wall time of each function, after one compiling / warm-up call each, timed
    round-robin so that drift in the machine's load affects all of them alike (the benchmarks
    report ratios of these times)."""
    import jax  # here, not at the top: scripts set XLA_FLAGS before jax is first imported
    import numpy as np

    for fn in fns:
        jax.block_until_ready(fn())
    times = [[] for _ in fns]
    for _ in range(int(repeats)):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[i].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]
