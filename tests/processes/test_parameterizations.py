"""Parameterization conversions: exact round trips for every kind and process, and agreement
with the closed-form definitions (score = -eps/sigma = (alpha x0 - x)/sigma^2, v = alpha eps - sigma x0)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxode_diffusion.processes import EDM, VE, RectifiedFlow, SubVP, VPCosine, VPLinear
from jaxode_diffusion.processes import parameterizations as P

PROCESSES = [VPLinear(), VPCosine(), SubVP(), VE(), EDM(), RectifiedFlow()]
IDS = ["vp_linear", "vp_cosine", "subvp", "ve", "edm", "rectified_flow"]


def _times(process):
    lo, hi = process.default_t_end, process.t_max
    return [lo + f * (hi - lo) for f in (0.05, 0.5, 0.95)]


def _setup(process, t, batch_t=False):
    k0, k1 = jax.random.split(jax.random.key(0))
    x0 = jax.random.normal(k0, (5, 3), jnp.float64)
    eps = jax.random.normal(k1, (5, 3), jnp.float64)
    tt = jnp.full((5,), t, jnp.float64) if batch_t else jnp.asarray(t, jnp.float64)
    x = process.alpha(jnp.asarray(t, jnp.float64)) * x0 + process.sigma(jnp.asarray(t, jnp.float64)) * eps
    return x0, eps, x, tt


def _all_conversions(process, x0, eps, x, tt):
    # One compiled program per process: every kind through every conversion path.
    out = {}
    for kind in P.KINDS:
        pred = P.from_x0_eps(x0, eps, kind, process, tt)
        s = P.to_score(pred, kind, x, tt, process)
        out[kind] = dict(
            pred=pred,
            x0_eps=P.to_x0_eps(pred, kind, x, tt, process),
            score=s,
            back=P.from_score(s, kind, x, tt, process),
            conv={
                o: P.convert(P.convert(pred, kind, o, x, tt, process), o, kind, x, tt, process)
                for o in P.KINDS
                if o != kind
            },
        )
    return out


@pytest.mark.parametrize(
    "process,batch_t",
    [(p, False) for p in PROCESSES] + [(VPLinear(), True), (EDM(), True)],
    ids=[f"{i}-scalar_t" for i in IDS] + ["vp_linear-batch_t", "edm-batch_t"],
)
def test_round_trips_every_kind(process, batch_t):
    with jax.enable_x64(True):
        for t in _times(process):
            x0, eps, x, tt = _setup(process, t, batch_t)
            score = -eps / process.sigma(jnp.asarray(t, jnp.float64))
            res = _all_conversions(process, x0, eps, x, tt)
            scale_x = 1 + float(jnp.abs(x).max())
            for kind in P.KINDS:
                r = res[kind]
                pred, pscale = r["pred"], 1 + float(jnp.abs(r["pred"]).max())
                # kind -> (x0, eps) recovers the truth
                np.testing.assert_allclose(r["x0_eps"][0], x0, rtol=1e-9, atol=1e-9 * scale_x)
                np.testing.assert_allclose(r["x0_eps"][1], eps, rtol=1e-9, atol=1e-9)
                # kind -> score is the true conditional score; score -> kind is the inverse
                np.testing.assert_allclose(
                    r["score"], score, rtol=1e-9, atol=1e-9 * float(jnp.abs(score).max())
                )
                np.testing.assert_allclose(r["back"], pred, rtol=1e-9, atol=1e-9 * pscale)
                for other in r["conv"]:
                    np.testing.assert_allclose(
                        r["conv"][other],
                        pred,
                        rtol=1e-8,
                        atol=1e-8 * pscale,
                        err_msg=f"{kind} -> {other} -> {kind}",
                    )


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_closed_forms(process):
    with jax.enable_x64(True):
        t = _times(process)[1]
        x0, eps, x, tt = _setup(process, t)
        a, s = process.alpha(tt), process.sigma(tt)
        np.testing.assert_allclose(P.eps_to_score(eps, x, tt, process), -eps / s, rtol=1e-12)
        np.testing.assert_allclose(
            P.x0_to_score(x0, x, tt, process), (a * x0 - x) / s**2, rtol=1e-9, atol=1e-9
        )
        np.testing.assert_allclose(P.x0_eps_to_v(x0, eps, tt, process), a * eps - s * x0, rtol=1e-12)
        v = a * eps - s * x0
        np.testing.assert_allclose(P.v_to_x0(v, x, tt, process), x0, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(P.v_to_eps(v, x, tt, process), eps, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(P.eps_to_x0(eps, x, tt, process), x0, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(P.score_to_x0(-eps / s, x, tt, process), x0, rtol=1e-9, atol=1e-9)
        # the flow target is d x_t / dt along the noising path (checked by autodiff)
        dxdt = jax.jacfwd(lambda u: process.alpha(u) * x0 + process.sigma(u) * eps)(tt)
        np.testing.assert_allclose(P.from_x0_eps(x0, eps, "flow", process, tt), dxdt, rtol=1e-8, atol=1e-10)


def test_rectified_flow_velocity_is_eps_minus_x0():
    with jax.enable_x64(True):
        rf = RectifiedFlow()
        x0, eps, _, tt = _setup(rf, 0.3)
        np.testing.assert_allclose(P.from_x0_eps(x0, eps, "flow", rf, tt), eps - x0, rtol=1e-10, atol=1e-12)


def test_aliases_and_errors():
    assert P.canonical_kind("denoiser") == "x0"
    assert P.canonical_kind("EPS") == "eps"
    with pytest.raises(ValueError, match="prediction kind 'foo' is not supported"):
        P.canonical_kind("foo")
