"""Bad inputs to ``solve`` / ``sample`` / ``make_times``: each a clear error naming the argument.

Part of the reliability suite (with tests/processes/test_bad_inputs.py for processes, tableaux and
grids, and tests/training/test_bad_inputs.py for training, checkpoints and the CLI).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode_diffusion as jd

VP = jd.VPLinear()
X = jnp.ones((4, 3))
TS = jd.make_times(VP, num_steps=4, grid="uniform")
GOOD = lambda x, t: -x  # noqa: E731


def _solve(**kw):
    args = dict(score_fn=GOOD, process=VP, x_init=X, ts=TS, solver="rk4")
    args.update(kw)
    return jd.solve(args.pop("score_fn"), args.pop("process"), args.pop("x_init"), args.pop("ts"),
                    args.pop("solver"), **args)


def _sample(**kw):
    args = dict(score_fn=GOOD, process=VP, x_init=X)
    args.update(kw)
    args.setdefault("num_steps", 4)
    return jd.sample(args.pop("score_fn"), args.pop("process"), args.pop("x_init"), **args)


CASES = [
    # (id, call, exception, words that must appear)
    ("score (B,1)", lambda: _solve(score_fn=lambda x, t: x[:, :1]), ValueError, "score_fn must return an array shaped like x"),
    ("score (1,d)", lambda: _solve(score_fn=lambda x, t: x[:1]), ValueError, "returned (1, 3)"),
    ("score scalar", lambda: _solve(score_fn=lambda x, t: jnp.sum(x)), ValueError, "score_fn must return"),
    ("score int", lambda: _solve(score_fn=lambda x, t: jnp.ones(x.shape, jnp.int32)), ValueError, "floating-point"),
    ("score needs cond", lambda: _solve(score_fn=lambda x, t, c: -x), ValueError, "pass cond="),
    ("score not callable", lambda: _solve(score_fn=3.0), ValueError, "score_fn must be callable"),
    ("process type", lambda: _solve(process="vp"), ValueError, "process must be a ForwardProcess"),
    ("x_init 1-D", lambda: _solve(x_init=jnp.ones(3)), ValueError, "x_init must be a batch"),
    ("x_init batch 0", lambda: _solve(x_init=jnp.ones((0, 3))), ValueError, "batch size 0"),
    ("x_init int", lambda: _solve(x_init=jnp.ones((4, 3), jnp.int32)), ValueError, "floating-point"),
    ("x_init nan", lambda: _solve(x_init=X.at[2, 1].set(jnp.nan)), ValueError, "batch element 2"),
    ("x_init inf", lambda: _sample(x_init=X.at[1, 0].set(jnp.inf)), ValueError, "x_init holds NaN/inf"),
    ("ts 2-D", lambda: _solve(ts=TS[None]), ValueError, "ts must be a 1-D array"),
    ("ts one point", lambda: _solve(ts=TS[:1]), ValueError, "at least 2 times"),
    ("ts nan", lambda: _solve(ts=TS.at[2].set(jnp.nan)), ValueError, "ts[2]"),
    ("ts not monotone", lambda: _solve(ts=jnp.array([1.0, 0.5, 0.7, 0.1])), ValueError, "strictly monotone"),
    ("ts repeated (multistep)", lambda: _solve(ts=jnp.array([1.0, 0.5, 0.5, 0.1]), solver="dpmpp_2m"), ValueError, "strictly monotone"),
    ("ts outside range", lambda: _solve(ts=jnp.array([1.5, 0.5, 0.1])), ValueError, "ts must lie in"),
    ("ts reaches t=0 (VP)", lambda: _solve(ts=jnp.array([1.0, 0.5, 0.0])), ValueError, "ts must lie in"),
    ("solver unknown", lambda: _solve(solver="rk5000"), ValueError, "unknown method"),
    ("solver form unknown", lambda: _solve(solver="xt:rk4"), ValueError, "unknown form"),
    ("solver wrong form", lambda: _solve(solver="x-t:dpmpp_2m"), ValueError, "integrates in the"),
    ("solver type", lambda: _solve(solver=4), ValueError, "solver must be a name"),
    ("cond batch", lambda: _solve(score_fn=lambda x, t, c: -x, cond=jnp.ones(3)), ValueError, "cond has leading dimension 3"),
    ("trajectory too big", lambda: _solve(return_trajectory=True, max_trajectory_bytes=10), ValueError, "max_trajectory_bytes"),
    ("throw not bool", lambda: _solve(throw="yes"), ValueError, "throw must be True or False"),
    ("remat not bool", lambda: _solve(remat=1), ValueError, "remat must be True or False"),
    ("num_steps bool", lambda: _sample(num_steps=True), ValueError, "num_steps"),
    ("num_steps zero", lambda: _sample(num_steps=0), ValueError, "num_steps"),
    ("num_steps float", lambda: _sample(num_steps=2.5), ValueError, "num_steps"),
    ("num_steps missing", lambda: _sample(num_steps=None), ValueError, "num_steps is required"),
    ("t_end zero (VP)", lambda: _sample(t_end=0.0), ValueError, "t_end"),
    ("t_start below t_end", lambda: _sample(t_start=0.1, t_end=0.5), ValueError, "t_start"),
    ("t_end nan", lambda: _sample(t_end=float("nan")), ValueError, "t_end"),
    ("grid unknown", lambda: _sample(grid="cosine-ish"), ValueError, "grid"),
    ("grid array + num_steps", lambda: _sample(grid=TS, num_steps=7), ValueError, "num_steps=7 disagrees"),
    ("grid array + t_end", lambda: _sample(grid=TS, num_steps=None, t_end=0.1), ValueError, "t_start/t_end"),
    ("check_finite not bool", lambda: _sample(check_finite="no"), ValueError, "check_finite must be True or False"),
    ("edm grid tiny rho", lambda: _sample(grid="edm:1e-9"), ValueError, "edm"),
]


@pytest.mark.parametrize("call,exc,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words.lower() in str(info.value).lower(), str(info.value)


def test_nan_from_the_score_is_not_blamed_on_the_input():
    bad = lambda x, t: jnp.where(t < 0.6, jnp.nan, -x)  # noqa: E731
    with pytest.raises(jd.NonFiniteSampleError, match="batch element 0 first at step"):
        _solve(score_fn=bad)


def test_state_dtype_follows_x_init_not_the_global_default():
    # x64 is on in the tests; a float32 x_init keeps a float32 state and float32 samples.
    sol = _solve(x_init=X.astype(jnp.float32), return_trajectory=True)
    assert sol.samples.dtype == jnp.float32 and sol.trajectory.dtype == jnp.float32
    assert sol.ts.dtype == jnp.float32
    assert jax.config.jax_enable_x64 and np.all(np.isfinite(np.asarray(sol.samples)))
