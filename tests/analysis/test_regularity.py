"""Regularity estimators against closed-form mixture derivatives and dense autodiff references."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxode_diffusion.analysis.regularity import (
    AUTO_EXACT_MAX_DIM,
    RegularityProfile,
    bind_cond,
    directional_second_derivative,
    jacobian_norm,
    plot_profile,
    profile,
    second_derivative_norm,
)
from jaxode_diffusion.analysis.regularity.kernels import dense_d2_operator
from jaxode_diffusion.models.mixture import GaussianMixture
from jaxode_diffusion.processes import VPLinear
from jaxode_diffusion.training.data import default_gmm

VP = VPLinear()
TIMES = (0.1, 0.4, 0.8)
# Tight iteration settings for float64 reference comparisons (the defaults target float32).
TIGHT = dict(tol=1e-13, num_iters=4000)


def _close(est, ref, rtol=1e-3):
    """Relative agreement, with an absolute floor at 1e-8 of the batch's largest value
    (a saturated mixture responsibility makes some derivatives vanish to rounding level)."""
    est, ref = np.asarray(est), np.asarray(ref)
    np.testing.assert_array_less(np.abs(est - ref), rtol * np.abs(ref) + 1e-8 * np.max(np.abs(ref)))


_dense_operator_norms = jax.jit(
    jax.vmap(lambda a: dense_d2_operator(a, jax.random.PRNGKey(7), 1e-14, 2000, 128)[0])
)


def _dense_reference(tensor):
    """Operator norm of a dense (d, d, d) tensor: many restarts, checked against random search."""
    ref = _dense_operator_norms(tensor)
    u = jax.random.normal(jax.random.PRNGKey(3), (4000, tensor.shape[-1]), tensor.dtype)
    u = u / jnp.linalg.norm(u, axis=-1, keepdims=True)
    # max over unit u, v of |T[u, v]| >= any |T[u, u]| and <= ||T||_F.
    search = jnp.max(jnp.linalg.norm(jnp.einsum("bijk,nj,nk->bni", tensor, u, u), axis=-1), axis=1)
    fro = jnp.linalg.norm(tensor.reshape(tensor.shape[0], -1), axis=-1)
    assert np.all(ref >= search * (1 - 1e-12)) and np.all(ref <= fro * (1 + 1e-12))
    return ref


class TanhMLP:
    """A small random score ``s(x, t) = W2 tanh(W1 x + t c + b)``: its Jacobian is not symmetric."""

    def __init__(self, d, width=16, seed=0):
        k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
        self.w1 = jax.random.normal(k1, (width, d)) / np.sqrt(d)
        self.w2 = jax.random.normal(k2, (d, width)) / np.sqrt(width)
        self.b = jax.random.normal(k3, (width,))
        self.c = jax.random.normal(k4, (width,))

    def __call__(self, x, t):
        return jnp.tanh(x @ self.w1.T + t * self.c + self.b) @ self.w2.T


def _mixture_points(d, t, n=5):
    # Means ~ N(0, I) (scale 1) keep components overlapping, so the points see mixed
    # responsibilities and non-negligible second derivatives at every t of TIMES.
    # Midpoints of pairs of samples lie between components more often than samples do.
    # Full covariances at d = 3; diagonal ones (a cheaper program to compile) at larger d.
    gm = GaussianMixture.random(jax.random.PRNGKey(d), 4, d, scale=1.0, diagonal=d > 3)
    y = gm.sample_marginal(jax.random.PRNGKey(100 + d), 2 * n, VP, t)
    return gm, 0.5 * (y[:n] + y[n:])


# Closed-form references, compiled once per shape (the mixture is a traced argument).
_exact_jacobian = jax.jit(lambda gm, x, t: gm.score_jacobian(x, VP, t))
_exact_tensor = jax.jit(lambda gm, x, t: gm.score_second_derivative(x, VP, t))


@pytest.mark.parametrize("d", [3, 8])
def test_norms_match_mixture_closed_form(d):
    full = d == 3  # the exact paths once; the matrix-free operator norms at each d
    for t in TIMES:
        gm, x = _mixture_points(d, t)
        score = gm.score_fn(VP)
        jac = np.asarray(_exact_jacobian(gm, x, t))
        tensor = _exact_tensor(gm, x, t)
        ref_spec = np.linalg.svd(jac, compute_uv=False)[:, 0]
        ref_op = _dense_reference(tensor)
        assert np.sum(ref_op > 1e-3 * np.max(ref_op)) >= 3  # not only round-off-level values

        mf, info = jacobian_norm(score, x, t, method="matrix_free", return_info=True, **TIGHT)
        _close(mf, ref_spec)
        assert np.all(np.asarray(info["iterations"]) >= 1) and not np.any(info["exact"])
        mf, info = second_derivative_norm(score, x, t, method="matrix_free", return_info=True, **TIGHT)
        _close(mf, ref_op)
        # 4 sketched HOSVD starts (at most d) + 8 random restarts
        assert info["restart_values"].shape == (x.shape[0], min(d, 4) + 8)
        assert np.all(info["num_at_max"] >= 1)
        if not full:
            continue
        _close(jacobian_norm(score, x, t, method="exact"), ref_spec, rtol=1e-10)
        _close(second_derivative_norm(score, x, t, method="exact", **TIGHT), ref_op, rtol=1e-8)
        _close(jacobian_norm(score, x, t, ord="fro", method="exact"),
               np.linalg.norm(jac.reshape(x.shape[0], -1), axis=-1), rtol=1e-10)
        _close(second_derivative_norm(score, x, t, ord="fro", method="exact"),
               np.linalg.norm(np.asarray(tensor).reshape(x.shape[0], -1), axis=-1), rtol=1e-10)


MLP = TanhMLP(6)
X_MLP = jax.random.normal(jax.random.PRNGKey(1), (5, 6))


def test_nonsymmetric_score_matches_jax_hessian():
    d, x = 6, X_MLP
    for t in (0.2, 0.7):
        f = lambda y, t=t: MLP(y[None], t)[0]  # noqa: E731
        jac = jax.vmap(jax.jacrev(f))(x)
        assert float(jnp.max(jnp.abs(jac - jnp.swapaxes(jac, 1, 2)))) > 1e-2  # not a gradient field
        # T[i, j, k] = d^2 s_i / dx_j dx_k from the Hessian of each score component.
        hess = lambda y: jnp.stack([jax.hessian(lambda z, i=i: f(z)[i])(y) for i in range(d)])  # noqa: E731
        tensor = jax.jit(jax.vmap(hess))(x)
        # Symmetric in (j, k) (mixed partials), not in the output index.
        np.testing.assert_allclose(tensor, jnp.swapaxes(tensor, 2, 3), atol=1e-12)
        assert float(jnp.max(jnp.abs(tensor - jnp.swapaxes(tensor, 1, 2)))) > 1e-2
        _close(jacobian_norm(MLP, x, t, method="matrix_free", **TIGHT),
               np.linalg.svd(np.asarray(jac), compute_uv=False)[:, 0])
        ref_op = _dense_reference(tensor)
        _close(second_derivative_norm(MLP, x, t, method="matrix_free", **TIGHT), ref_op)
        _close(second_derivative_norm(MLP, x, t, method="exact", **TIGHT), ref_op, rtol=1e-8)
        # Stochastic Frobenius estimates: within 5 standard errors, which are small.
        for fn, ref in ((jacobian_norm, jac), (second_derivative_norm, tensor)):
            ref = np.linalg.norm(np.asarray(ref).reshape(x.shape[0], -1), axis=-1)
            est, info = fn(MLP, x, t, ord="fro", method="matrix_free", num_probes=512, return_info=True)
            se = np.asarray(info["stderr"])
            assert np.all(np.abs(np.asarray(est) - ref) <= 5 * se) and np.all(se <= 0.1 * ref)
        v = jax.random.normal(jax.random.PRNGKey(5), x.shape)
        _close(directional_second_derivative(MLP, x, t, v), jnp.einsum("bijk,bj,bk->bi", tensor, v, v),
               rtol=1e-10)


def test_results_do_not_depend_on_batch_size():
    # Same random start vectors / probes for every example: batch of 5 == each example alone.
    calls = [
        lambda y: jacobian_norm(MLP, y, 0.3, method="matrix_free", **TIGHT),
        lambda y: second_derivative_norm(MLP, y, 0.3, method="matrix_free", **TIGHT),
        lambda y: second_derivative_norm(MLP, y, 0.3, ord="fro", method="matrix_free", num_probes=512),
    ]
    for fn in calls:
        together = np.asarray(fn(X_MLP))
        alone = np.concatenate([np.asarray(fn(X_MLP[i : i + 1])) for i in range(X_MLP.shape[0])])
        np.testing.assert_allclose(together, alone, rtol=1e-9)


def test_argument_validation():
    score = lambda x, t: -x  # noqa: E731
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match=r"ord='nuclear'.*'spectral', 'fro'"):
        jacobian_norm(score, x, 0.5, ord="nuclear")
    with pytest.raises(ValueError, match=r"ord='spectral'.*'operator', 'fro'"):
        second_derivative_norm(score, x, 0.5, ord="spectral")
    with pytest.raises(ValueError, match=r"method='dense'.*'exact', 'matrix_free', 'auto'"):
        jacobian_norm(score, x, 0.5, method="dense")
    with pytest.raises(ValueError, match=r"method='lanczos'"):
        second_derivative_norm(score, x, 0.5, method="lanczos")
    with pytest.raises(ValueError, match=r"probe='sobol'"):
        jacobian_norm(score, x, 0.5, ord="fro", probe="sobol")
    with pytest.raises(ValueError, match=r"num_probes must be an integer >= 2"):
        second_derivative_norm(score, x, 0.5, ord="fro", num_probes=1)
    with pytest.raises(ValueError, match=r"batch of shape \(B, \*event_shape\)"):
        jacobian_norm(score, jnp.ones(3), 0.5)
    with pytest.raises(ValueError, match=r"v must have shape"):
        directional_second_derivative(score, x, 0.5, jnp.ones(4))
    with pytest.raises(ValueError, match=r"source='noise'"):
        profile(score, VP, t_grid=[0.1, 0.5], x_source=x, source="noise")


def test_auto_method_threshold_and_image_shapes():
    score = lambda x, t: -x / (1.0 + t)  # noqa: E731
    small = jnp.ones((2, AUTO_EXACT_MAX_DIM // 4, 2, 2))  # image-shaped, d = 64: exact
    vals, info = jacobian_norm(score, small, 1.0, return_info=True)
    assert np.all(info["exact"]) and np.allclose(vals, 0.5)
    big = jnp.ones((2, AUTO_EXACT_MAX_DIM + 1))
    vals, info = jacobian_norm(score, big, 1.0, return_info=True)
    assert not np.any(info["exact"]) and np.allclose(vals, 0.5)
    assert np.all(info["converged"])


def test_profile_finite_and_json(tmp_path):
    gm = default_gmm(2)  # the CLI's mixture: test_cli_gmm reuses these compiled estimators
    x0 = gm.sample(jax.random.PRNGKey(1), 4)
    prof = profile(gm.score_fn(VP), VP, t_grid=[1.0, 0.3, 0.05, 0.01], x_source=x0, substeps=2)
    assert isinstance(prof, RegularityProfile)
    assert list(prof.t) == sorted(prof.t) and len(prof.sigma) == 4
    assert set(prof.sources) == {"trajectory", "data"} and len(prof.curves) == 8
    for c in prof.curves:
        for w in ("raw", "weighted"):
            stats = c.stats(w)
            assert stats.names() == ["max", "mean", "q50", "q90", "q99"]
            for stat in stats.names():
                vals = stats.stat(stat)
                assert len(vals) == 4 and np.all(np.isfinite(vals)), (c.source, c.quantity, w, stat)
            assert np.all(np.asarray(stats.max) >= np.asarray(stats.stat("q50")))
    # sigma weighting: sigma^2 for first, sigma^3 for second derivatives.
    sig = np.asarray(prof.sigma)
    jac = prof.curve("data", "jacobian_spectral")
    np.testing.assert_allclose(jac.weighted.max, sig**2 * np.asarray(jac.raw.max))
    d2 = prof.curve("data", "second_fro")
    np.testing.assert_allclose(d2.weighted.mean, sig**3 * np.asarray(d2.raw.mean))
    text = prof.to_json(tmp_path / "p.json")
    again = RegularityProfile.from_dict(json.loads(text))
    assert again == prof
    with pytest.raises(ValueError, match="no curve"):
        prof.curve("data", "nope")
    png = plot_profile(again, tmp_path / "p.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_trajectory_profile_is_aligned_with_the_grid():
    # s = -x^3 has Ds = diag(-3 x^2): at t_max the trajectory state is x_init (all 2), so the
    # largest t of the profile must report 3 * 2^2 = 12; later states have moved.
    score = lambda x, t: -(x**3)  # noqa: E731
    prof = profile(score, VP, t_grid=[0.5, 0.9], x_source=jnp.zeros((3, 2)), source="trajectory",
                   x_init=jnp.full((3, 2), 2.0), quantities=("jacobian_spectral",))
    vals = prof.curve("trajectory", "jacobian_spectral").raw.max
    assert list(prof.t) == pytest.approx([0.5, 0.9])
    assert vals[1] == pytest.approx(12.0) and abs(vals[0] - 12.0) > 1e-3


def test_matrix_free_scales_to_d3072_without_dense_memory():
    d, width = 3072, 32
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    w1 = jax.random.normal(k1, (width, d)) / np.sqrt(d)
    w2 = jax.random.normal(k2, (d, width)) / np.sqrt(width)

    def score(x, t):
        return jnp.tanh(x @ w1.T + t) @ w2.T - x

    x = jax.random.normal(jax.random.PRNGKey(1), (1, d))
    dense_bytes = 8 * d**3  # one float64 d x d x d tensor: 232 GB
    for fn in (
        lambda y: second_derivative_norm(score, y, 0.5, method="matrix_free", num_iters=3, num_restarts=2),
        lambda y: second_derivative_norm(score, y, 0.5, ord="fro", method="matrix_free", num_probes=4),
    ):
        compiled = jax.jit(fn).lower(x).compile()
        mem = compiled.memory_analysis()
        assert mem.temp_size_in_bytes < 0.01 * dense_bytes, mem
        assert mem.temp_size_in_bytes < 64 * 2**20, mem  # in fact O(d * (restarts + probes + width))
        vals = np.asarray(compiled(x))
        assert vals.shape == (1,) and np.all(np.isfinite(vals)) and np.all(vals > 0)


def test_derivative_norms_with_per_example_cond():
    score = lambda x, t, c: -(x - c[:, None]) * (1.0 + c[:, None]) ** 2  # Ds = -(1 + c)^2 I
    x = jnp.ones((3, 2))
    c = jnp.array([0.0, 1.0, 2.0])
    np.testing.assert_allclose(jacobian_norm(score, x, 0.5, cond=c), [1.0, 4.0, 9.0], rtol=1e-5)
    one = jacobian_norm(bind_cond(score, c[1:2]), x[:1], 0.5)
    np.testing.assert_allclose(one, [4.0], rtol=1e-5)
    cubic = lambda x, t, c: -c[:, None] * x**3
    v = directional_second_derivative(cubic, x, 0.5, jnp.array([1.0, 0.0]), cond=c)
    np.testing.assert_allclose(v[:, 0], -6.0 * c, rtol=1e-5)
    with pytest.raises(ValueError, match="batch size 3"):
        jacobian_norm(score, x, 0.5, cond=jnp.ones(2))
