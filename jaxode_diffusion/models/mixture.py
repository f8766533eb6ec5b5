"""Closed-form targets: Gaussian mixtures with exact marginals, scores and score derivatives.

Under ``x_t = alpha(t) x_0 + sigma(t) eps`` a mixture ``sum_k w_k N(mu_k, Sigma_k)`` stays a
mixture: ``p_t = sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I)``. Everything here
(log-density, score, score Jacobian, second derivative) is exact, so these targets are the
references for order tests, score-error measurement, regularity checks and TV.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.processes import ForwardProcess

__all__ = ["GaussianMixture", "MixtureScore"]

_LOG_2PI = float(np.log(2.0 * np.pi))


class GaussianMixture(eqx.Module):
    """Gaussian mixture ``sum_k w_k N(mu_k, Sigma_k)`` on ``R^d``.

    Args:
        weights: ``(K,)`` non-negative, normalised on construction.
        means: ``(K, d)``.
        covs: ``(K, d, d)`` full covariances, ``(K, d)`` diagonal variances, or ``(K,)``
            isotropic variances (the last two are stored diagonally: ``diagonal=True``).

    Raises:
        ValueError: on inconsistent shapes, negative or all-zero weights, non-positive
            variances, or covariances that are not symmetric positive definite.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm = GaussianMixture(jnp.ones(2), jnp.array([[-2.0], [2.0]]), jnp.array([0.1, 0.1]))
        >>> s = gm.score(jnp.zeros((3, 1)), VPLinear(), 0.5)
        >>> s.shape
        (3, 1)
    """

    weights: jax.Array
    means: jax.Array
    covs: jax.Array
    diagonal: bool = eqx.field(static=True)

    def __init__(self, weights, means, covs):
        weights = jnp.asarray(weights)
        means = jnp.asarray(means)
        covs = jnp.asarray(covs)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {means.shape}.")
        k, d = means.shape
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape (K,) = ({k},) to match means, got {weights.shape}.")
        if covs.shape == (k,):
            covs = jnp.broadcast_to(covs[:, None], (k, d))
        if covs.shape == (k, d):
            diagonal = True
        elif covs.shape == (k, d, d):
            diagonal = False
        else:
            raise ValueError(
                f"covs must have shape (K, d, d) (full), (K, d) (diagonal) or (K,) (isotropic) "
                f"with K={k}, d={d}; got {covs.shape}."
            )
        if not any(isinstance(v, jax.core.Tracer) for v in (weights, means, covs)):
            w = np.asarray(weights)
            if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
                raise ValueError(f"weights must be finite, >= 0 and not all zero; got {w}.")
            c = np.asarray(covs)
            if diagonal and np.any(c <= 0):
                raise ValueError("diagonal covariances (variances) must be > 0.")
            if not diagonal:
                if not np.allclose(c, np.swapaxes(c, -1, -2), atol=1e-8):
                    raise ValueError("covs must be symmetric matrices.")
                if np.any(np.linalg.eigvalsh(c) <= 0):
                    raise ValueError("covs must be positive definite (all eigenvalues > 0).")
        self.weights = weights / jnp.sum(weights)
        self.means = means
        self.covs = covs
        self.diagonal = diagonal

    # -- constructors ----------------------------------------------------------------------
    @classmethod
    def random(cls, key, num_components: int, dim: int, *, scale: float = 2.0, diagonal=False,
               min_var: float = 0.05, max_var: float = 0.5):
        """A random, well-separated-ish mixture (means ~ N(0, scale^2 I), random SPD covariances).

        The covariance eigenvalues lie in ``[min_var, max_var]`` so derivatives stay bounded.

        Example:
            >>> import jax
            >>> gm = GaussianMixture.random(jax.random.PRNGKey(0), 3, 2, diagonal=True)
            >>> gm.num_components, gm.dim, gm.diagonal
            (3, 2, True)
        """
        kw, km, kc, ke = jax.random.split(key, 4)
        weights = jax.random.uniform(kw, (num_components,), minval=0.5, maxval=1.5)
        means = scale * jax.random.normal(km, (num_components, dim))
        eig = jax.random.uniform(ke, (num_components, dim), minval=min_var, maxval=max_var)
        if diagonal:
            return cls(weights, means, eig)
        q, _ = jnp.linalg.qr(jax.random.normal(kc, (num_components, dim, dim)))
        covs = jnp.einsum("kij,kj,klj->kil", q, eig, q)
        covs = 0.5 * (covs + jnp.swapaxes(covs, -1, -2))
        return cls(weights, means, covs)

    @classmethod
    def dimension_family(cls, dim: int, *, num_components: int = 4, seed: int = 0, separation: float = 1.5,
                         min_var: float = 0.05, max_var: float = 0.5):
        """A mixture whose difficulty grows with ``dim``, normalised to unit per-coordinate scale.

        ``K = num_components`` Gaussians with means ``separation * N(0, I_d)`` (generic directions
        of R^d, pairwise distances growing like ``sqrt(2 d) * separation``) and full covariances
        ``Q_k diag(lambda_k) Q_k^T`` with a uniformly random rotation ``Q_k`` and eigenvalues
        log-uniform in ``[min_var, max_var]`` (anisotropic in every direction). The mixture is then
        centred and every coordinate scaled so that the mixture's per-coordinate variance is 1
        (``Cov_ii = 1``), so only the shape, not the scale, changes with ``d``. Deterministic
        from ``(dim, num_components, seed)`` (NumPy ``default_rng``), in float64 under x64.

        Args:
            dim: ``d >= 1``.
            num_components: ``K >= 1``.
            seed: integer seed.
            separation: scale of the means before normalisation (relative to unit within-component
                scale ``~ sqrt(max_var)``).
            min_var, max_var: eigenvalue range of the covariances before normalisation.

        Raises:
            ValueError: on ``dim < 1``, ``num_components < 1`` or a bad variance range.

        Example:
            >>> import numpy as np
            >>> gm = GaussianMixture.dimension_family(8, seed=0)
            >>> gm.dim, gm.num_components, bool(np.allclose(np.diag(gm.covariance()), 1.0))
            (8, 4, True)
        """
        for name, v in (("dim", dim), ("num_components", num_components)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"GaussianMixture.dimension_family: {name}={v!r} must be an int >= 1.")
        if not 0 < min_var <= max_var:
            raise ValueError(
                f"GaussianMixture.dimension_family: need 0 < min_var <= max_var; got min_var={min_var!r}, "
                f"max_var={max_var!r}."
            )
        rng = np.random.default_rng([int(seed), int(dim), int(num_components)])
        k, d = int(num_components), int(dim)
        weights = rng.uniform(0.5, 1.5, k)
        means = separation * rng.standard_normal((k, d))
        eig = np.exp(rng.uniform(np.log(min_var), np.log(max_var), (k, d)))
        q, r = np.linalg.qr(rng.standard_normal((k, d, d)))
        q = q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[:, None, :]  # Haar-distributed rotations
        covs = np.einsum("kij,kj,klj->kil", q, eig, q)
        w = weights / weights.sum()
        mu = w @ means
        dm = means - mu
        cov = np.einsum("k,kij->ij", w, covs) + np.einsum("k,ki,kj->ij", w, dm, dm)
        s = 1.0 / np.sqrt(np.diag(cov))
        means = dm * s
        covs = covs * s[None, :, None] * s[None, None, :]
        covs = 0.5 * (covs + np.swapaxes(covs, -1, -2))
        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
        return cls(jnp.asarray(weights, dtype), jnp.asarray(means, dtype), jnp.asarray(covs, dtype))

    @classmethod
    def ring(cls, num_components: int = 8, radius: float = 2.0, std: float = 0.2):
        """``num_components`` isotropic Gaussians evenly spaced on a circle in 2-D (the "8 gaussians").

        Example:
            >>> gm = GaussianMixture.ring(4, radius=1.0)
            >>> [round(float(v), 6) + 0.0 for v in gm.means[1]]
            [0.0, 1.0]
        """
        ang = 2 * np.pi * np.arange(num_components) / num_components
        means = radius * np.stack([np.cos(ang), np.sin(ang)], -1)
        return cls(np.ones(num_components), means, np.full(num_components, std**2))

    # -- basic properties -------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """The dimension ``d``."""
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        """The number of components ``K``."""
        return self.means.shape[0]

    def mean(self):
        """The mixture's mean ``sum_k w_k mu_k`` (``(d,)``)."""
        return self.weights @ self.means

    def covariance(self):
        """The mixture's covariance (``(d, d)``): within-component plus between-means."""
        full = jax.vmap(jnp.diag)(self.covs) if self.diagonal else self.covs
        m = self.mean()
        dm = self.means - m
        return jnp.einsum("k,kij->ij", self.weights, full) + jnp.einsum("k,ki,kj->ij", self.weights, dm, dm)

    def marginal(self, process: ForwardProcess, t) -> GaussianMixture:
        """The exact time-``t`` marginal ``p_t`` as a new mixture."""
        a, s = process.alpha(t), process.sigma(t)
        if self.diagonal:
            covs = a**2 * self.covs + s**2
        else:
            covs = a**2 * self.covs + s**2 * jnp.eye(self.dim, dtype=self.covs.dtype)
        return GaussianMixture(self.weights, a * self.means, covs)

    # -- densities and scores at t = 0 (call on a marginal for time t) ------------------------
    def _flat(self, x):
        x = jnp.asarray(x)
        if x.shape[-1] != self.dim and x.ndim >= 2 and int(np.prod(x.shape[1:])) == self.dim:
            return x.reshape(x.shape[0], self.dim), x.shape
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have last dimension d={self.dim} (or a (B, ...) shape with d entries per row); got {x.shape}.")
        return x, None

    def _component_terms(self, x):
        """Per-component log N(x; mu_k, Sigma_k) + log w_k and precision-times-residual.

        Returns (logits (..., K), prec_diff (..., K, d)) with prec_diff = Sigma_k^{-1}(x - mu_k).
        """
        diff = x[..., None, :] - self.means  # (..., K, d)
        if self.diagonal:
            prec_diff = diff / self.covs
            logdet = jnp.sum(jnp.log(self.covs), -1)
        else:
            chol = jnp.linalg.cholesky(self.covs)  # (K, d, d)
            logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), -1)
            prec = jax.vmap(lambda L: jax.scipy.linalg.cho_solve((L, True), jnp.eye(L.shape[0], dtype=L.dtype)))(chol)
            prec_diff = jnp.einsum("kij,...kj->...ki", prec, diff)
        maha = jnp.sum(diff * prec_diff, -1)
        logits = jnp.log(self.weights) - 0.5 * (maha + logdet + self.dim * _LOG_2PI)
        return logits, prec_diff

    def log_prob(self, x):
        """``log p(x)`` for x of shape ``(..., d)``."""
        x, _ = self._flat(x)
        logits, _ = self._component_terms(x)
        return jax.scipy.special.logsumexp(logits, -1)

    def grad_log_prob(self, x):
        """``grad log p(x)`` (shape of x)."""
        xf, shape = self._flat(x)
        logits, prec_diff = self._component_terms(xf)
        r = jax.nn.softmax(logits, -1)
        g = -jnp.einsum("...k,...kd->...d", r, prec_diff)
        return g if shape is None else g.reshape(shape)

    def hessian_log_prob(self, x):
        """``D grad log p(x)`` (``(..., d, d)``), exact:
        ``sum_k r_k (-P_k) + sum_k r_k s_k s_k^T - s s^T`` with ``s_k = -P_k (x - mu_k)``."""
        x, _ = self._flat(x)
        logits, prec_diff = self._component_terms(x)
        r = jax.nn.softmax(logits, -1)
        sk = -prec_diff
        s = jnp.einsum("...k,...kd->...d", r, sk)
        if self.diagonal:
            prec = jax.vmap(jnp.diag)(1.0 / self.covs)
        else:
            prec = jnp.linalg.inv(self.covs)
        h = -jnp.einsum("...k,kij->...ij", r, prec)
        h = h + jnp.einsum("...k,...ki,...kj->...ij", r, sk, sk) - s[..., :, None] * s[..., None, :]
        return h

    def third_derivative_log_prob(self, x):
        """``D^2 grad log p(x)`` (``(..., d, d, d)``) by forward-mode autodiff of the exact Jacobian."""
        x, _ = self._flat(x)
        fn = lambda y: self.hessian_log_prob(y)
        return jnp.vectorize(jax.jacfwd(fn), signature="(d)->(d,d,d)")(x)

    def sample(self, key, n: int):
        """``n`` samples of the mixture, shape ``(n, d)``."""
        kc, kz = jax.random.split(key)
        comp = jax.random.choice(kc, self.num_components, (n,), p=self.weights)
        z = jax.random.normal(kz, (n, self.dim), dtype=self.means.dtype)
        if self.diagonal:
            return self.means[comp] + jnp.sqrt(self.covs[comp]) * z
        chol = jnp.linalg.cholesky(self.covs)
        return self.means[comp] + jnp.einsum("nij,nj->ni", chol[comp], z)

    # -- time-t quantities ------------------------------------------------------------------
    def log_prob_t(self, x, process: ForwardProcess, t):
        """Exact ``log p_t(x)`` of the time-``t`` marginal."""
        return self.marginal(process, t).log_prob(x)

    def score(self, x, process: ForwardProcess, t):
        """Exact score ``grad log p_t(x)``; x of shape ``(B, d)`` or ``(B, ...)`` with d entries."""
        return self.marginal(process, t).grad_log_prob(x)

    def score_jacobian(self, x, process: ForwardProcess, t):
        """Exact ``D_x score`` at time ``t`` (``(..., d, d)``)."""
        return self.marginal(process, t).hessian_log_prob(x)

    def score_second_derivative(self, x, process: ForwardProcess, t):
        """Exact ``D_x^2 score`` at time ``t`` (``(..., d, d, d)``)."""
        return self.marginal(process, t).third_derivative_log_prob(x)

    def sample_marginal(self, key, n: int, process: ForwardProcess, t):
        """Exact samples of ``p_t``."""
        return self.marginal(process, t).sample(key, n)

    def score_fn(self, process: ForwardProcess) -> MixtureScore:
        """The exact score as ``score_fn(x, t)`` (a pytree: mixture and process are traced leaves)."""
        return MixtureScore(self, process)


class MixtureScore(eqx.Module):
    """``score_fn(x, t)`` of a :class:`GaussianMixture` under a process (exact).

    A pytree: the mixture's and the process's arrays are traced leaves. Build it with
    :meth:`GaussianMixture.score_fn`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import GaussianMixture, VE
        >>> score_fn = GaussianMixture.ring(4).score_fn(VE())
        >>> score_fn(jnp.zeros((3, 2)), 0.5).shape
        (3, 2)
    """

    mixture: GaussianMixture
    process: ForwardProcess

    def __call__(self, x, t):
        return self.mixture.score(x, self.process, t)
