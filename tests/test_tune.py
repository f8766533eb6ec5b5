"""tune(): the winner is the best held-back candidate, learned grids never lose to their start on
the held-back batch, the JSON round-trips and reproduces samples (API and CLI)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.convergence import reference_solve
from jaxode_diffusion.tune import TunedSampler, load_tuned, tune

NFE = 4
SOLVERS = ["ddim", "dpmpp_2m", "x0-lambda:heun"]


@pytest.fixture(scope="module")
def tuned():
    vp = jd.VPLinear()
    gm = jd.GaussianMixture.random(jax.random.PRNGKey(2), 4, 2, scale=2.0, min_var=0.05, max_var=0.5)
    sf = gm.score_fn(vp)
    x_cal = gm.sample_marginal(jax.random.PRNGKey(10), 24, vp, vp.default_t_start)
    x_held = gm.sample_marginal(jax.random.PRNGKey(11), 24, vp, vp.default_t_start)
    t = tune(sf, vp, x_cal, nfe=NFE, heldout_x_init=x_held, solvers=SOLVERS, learn_top=1, learn_steps=6,
             patience=6, progress=False)
    return t, sf, vp, x_held


def test_winner_is_best_held_back_candidate(tuned):
    t, sf, vp, x_held = tuned
    finite = [c for c in t.candidates
              if isinstance(c["heldout_error"], float) and math.isfinite(c["heldout_error"])]
    # 3 solvers x 4 grids + 1 learned grid, every one within the budget.
    assert len(finite) == len(SOLVERS) * len(jd.GRID_NAMES) + 1
    assert all(c["nfe"] <= NFE for c in finite)
    assert t.heldout_error == min(c["heldout_error"] for c in finite)
    assert (t.solver, t.grid) == (finite[0]["solver"], finite[0]["grid"])
    assert t.nfe <= NFE and t.ts.shape == (t.num_steps + 1,)
    # The recorded error is the winner's error on the held-back batch, recomputed independently.
    ref = reference_solve(sf, vp, x_held, t_end=float(t.ts[-1]), rtol=1e-10, atol=1e-10)
    x = jd.sample(sf, vp, x_held, solver=t.solver, grid=t.ts, num_steps=None)
    err = float(jnp.sqrt(jnp.mean(jnp.sum((x - ref) ** 2, axis=1))))
    assert err == pytest.approx(t.heldout_error, rel=1e-6)
    # Step counts use the budget: multistep solvers take NFE steps, a 2-stage RK takes NFE / 2.
    steps = {c["solver"]: c["num_steps"] for c in finite}
    assert steps["dpmpp_2m"] == NFE and steps["x0-lambda:heun"] == NFE // 2


def test_learned_grid_never_worse_than_start_on_held_back(tuned):
    t, *_ = tuned
    learned = [c for c in t.candidates if c["grid"].startswith("learned(")]
    assert len(learned) == 1
    c = learned[0]
    start = c["grid"][len("learned("):-1]
    fixed = next(f for f in t.candidates if f["solver"] == c["solver"] and f["grid"] == start)
    assert c["heldout_error"] <= fixed["heldout_error"]
    assert c["start_heldout_error"] == pytest.approx(fixed["heldout_error"], rel=1e-9)


def test_json_round_trip_reproduces_samples(tuned, tmp_path):
    t, sf, vp, x_held = tuned
    path = t.save(tmp_path / "tuned.json")
    back = load_tuned(path, process=vp)
    assert isinstance(back, TunedSampler)
    np.testing.assert_array_equal(back.ts, t.ts)
    assert (back.solver, back.nfe, back.num_steps, back.grid) == (t.solver, t.nfe, t.num_steps, t.grid)
    assert back.heldout_error == t.heldout_error and len(back.candidates) == len(t.candidates)
    x_new = vp.prior_sample(jax.random.PRNGKey(5), (8, 2))
    a = jd.sample(sf, vp, x_new, solver=back.solver, grid=back.ts, num_steps=None)
    b = t.sample(sf, vp, x_new)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="tuned for"):
        load_tuned(path, process=jd.VPLinear(beta_max=10.0))
    (tmp_path / "junk.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a tuned-sampler file"):
        load_tuned(tmp_path / "junk.json")


def test_bad_arguments():
    vp = jd.VPLinear()
    sf = jd.GaussianMixture.ring(4).score_fn(vp)
    x = vp.prior_sample(jax.random.PRNGKey(0), (8, 2))
    with pytest.raises(ValueError, match="nfe=0"):
        tune(sf, vp, x, nfe=0, progress=False)
    with pytest.raises(ValueError, match="heldout_x_init equals"):
        tune(sf, vp, x, nfe=4, heldout_x_init=x, progress=False)
    with pytest.raises(ValueError, match="unknown"):
        tune(sf, vp, x, nfe=4, solvers=["no_such_solver"], progress=False)


def test_cli_tune_then_sample_tuned(tmp_path):
    from jaxode_diffusion.cli import main
    from jaxode_diffusion.data import unnormalize
    from jaxode_diffusion.training import TrainConfig, load_run, train

    run = tmp_path / "run"
    train(TrainConfig(steps=10, out_dir=str(run), data="eight_gaussians", batch_size=32, width=16, depth=1,
                      n_train=256, n_heldout=32, progress=False, log_every=5, eval_every=0, ckpt_every=10))
    out = tmp_path / "tuned.json"
    assert main(["tune", "--checkpoint", str(run), "--nfe", "3", "--out", str(out), "--batch", "8",
                 "--solvers", "ddim,dpmpp_2m", "--learn-top", "0", "--no-progress"]) == 0
    t = load_tuned(out)
    assert t.solver in ("ddim", "dpmpp_2m") and t.nfe <= 3 and len(t.candidates) == 2 * len(jd.GRID_NAMES)
    npy = tmp_path / "s.npy"
    assert main(["sample", "--checkpoint", str(run), "--tuned", str(out), "--num-samples", "6", "--out",
                 str(npy), "--seed", "3"]) == 0
    score_fn, cfg = load_run(run)
    x_init = score_fn.process.prior_sample(jax.random.key(3), (6, 2))
    want = unnormalize(np.asarray(t.sample(score_fn, score_fn.process, x_init)), cfg["data"])
    np.testing.assert_allclose(np.load(npy), want, rtol=1e-6, atol=1e-6)
    from argparse import Namespace

    from jaxode_diffusion.cli_models import cmd_sample

    both = Namespace(checkpoint=str(run), tuned=str(out), solver="ddim", steps=3, num_samples=6, out=str(npy),
                     seed=0, grid="uniform")
    with pytest.raises(ValueError, match="--tuned"):  # --tuned fixes the solver: --solver contradicts it
        cmd_sample(both)
