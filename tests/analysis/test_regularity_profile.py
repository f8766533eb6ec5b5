"""The typed regularity profile: JSON schema round trip, named lookups, plotting and the study's verdict.

Built by hand (no estimators run), so these checks are fast; ``tests/analysis/test_regularity.py`` checks
the numbers a real :func:`~jaxode_diffusion.analysis.regularity.profile` produces.
"""

import json

import numpy as np
import pytest

from jaxode_diffusion.analysis.plotting import plot_profile
from jaxode_diffusion.analysis.regularity import (
    BatchStats,
    EstimateAccuracy,
    ProfileCurve,
    ProfileSettings,
    RegularityProfile,
)
from jaxode_diffusion.study.run import _bounded_verdict

T = (0.01, 0.1, 0.5, 1.0)
SIGMA = (0.1, 0.3, 0.7, 0.9)


def _curve(source, quantity, power, raw_max):
    raw = BatchStats(max=tuple(raw_max), mean=tuple(v / 2 for v in raw_max),
                     quantiles={0.5: tuple(v / 3 for v in raw_max)})
    weighted = BatchStats(max=tuple(v * s**power for v, s in zip(raw_max, SIGMA, strict=True)),
                          mean=tuple(v / 2 * s**power for v, s in zip(raw_max, SIGMA, strict=True)),
                          quantiles={0.5: tuple(v / 3 * s**power for v, s in zip(raw_max, SIGMA, strict=True))})
    acc = EstimateAccuracy(exact_frac=(1.0,) * 4, converged_frac=(1.0,) * 4) if quantity.endswith("spectral") \
        else EstimateAccuracy(exact_frac=(0.0,) * 4, max_rel_stderr=(0.01,) * 4)
    return ProfileCurve(source, quantity, power, raw, weighted, acc)


def _profile():
    curves = (
        _curve("data", "jacobian_spectral", 2, [100.0, 11.0, 2.0, 1.2]),   # sigma^2 ||Ds|| = 1, 0.99, ...
        _curve("data", "second_fro", 3, [1e6, 1e3, 10.0, 2.0]),           # sigma^3 ||D2 s|| = 1000: grows
        _curve("trajectory", "jacobian_spectral", 2, [90.0, 10.0, 2.0, 1.0]),
    )
    settings = ProfileSettings(process="VPLinear", dim=2, event_shape=(2,), batch=4, method="exact",
                               source="both", solver="rk4", substeps=1,
                               quantities=("jacobian_spectral", "second_fro"), quantiles=(0.5,), dtype="float64")
    return RegularityProfile(t=T, lam=(4.6, 1.1, -0.3, -1.0), alpha=(1.0, 0.95, 0.7, 0.4), sigma=SIGMA,
                             curves=curves, settings=settings)


def test_json_schema_round_trip_and_lookup(tmp_path):
    prof = _profile()
    data = json.loads(prof.to_json(tmp_path / "p.json"))
    # The schema the CLI's regularity.json and the study's metrics.json have always had.
    assert set(data) == {"t", "lam", "alpha", "sigma", "results", "accuracy", "meta"}
    assert data["results"]["data"]["jacobian_spectral"]["weighted"]["q50"][0] == pytest.approx(100 / 3 * 0.01)
    assert set(data["accuracy"]["data"]["second_fro"]) == {"exact_frac", "max_rel_stderr"}
    assert data["meta"]["sigma_power"] == {"jacobian_spectral": 2, "second_fro": 3}
    assert "score" not in data["meta"]
    again = RegularityProfile.from_dict(json.loads((tmp_path / "p.json").read_text()))
    assert again == prof
    assert prof.sources == ("data", "trajectory")
    assert prof.quantities == ("jacobian_spectral", "second_fro")
    c = prof.curve("trajectory", "jacobian_spectral")
    assert c.stats("raw").max == (90.0, 10.0, 2.0, 1.0) and c.weighted.stat("q50")[0] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="no curve for source='trajectory', quantity='second_fro'"):
        prof.curve("trajectory", "second_fro")
    with pytest.raises(ValueError, match="stat='q99' is not a statistic.*'q50'"):
        c.raw.stat("q99")
    with pytest.raises(ValueError, match="weighting"):
        c.stats("scaled")
    prof.settings.score = "gmm"
    assert RegularityProfile.from_dict(prof.to_dict()).settings.score == "gmm"


def test_results_property_is_deprecated_but_still_the_dict():
    prof = _profile()
    with pytest.warns(DeprecationWarning, match="curve"):
        res = prof.results
    assert res == prof.to_dict()["results"]


def test_plot_from_profile_or_its_dict(tmp_path):
    prof = _profile()
    for i, p in enumerate((prof, prof.to_dict())):
        path = plot_profile(p, tmp_path / f"p{i}.png", stat="q50", band="max")
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="q90"):
        plot_profile(prof, tmp_path / "bad.png", stat="q90")


def test_study_verdict_reads_the_typed_profile():
    v = _bounded_verdict(_profile())
    assert set(v["checks"]) == {"data/jacobian_spectral", "data/second_fro", "trajectory/jacobian_spectral"}
    assert v["checks"]["data/jacobian_spectral"]["bounded"]
    assert not v["checks"]["data/second_fro"]["bounded"]  # sigma^3 ||D2 s|| = 1000 at t_end: grows
    assert v["bounded"] is False
    assert np.isclose(v["checks"]["data/second_fro"]["at_t_end"], 1e6 * 0.1**3)
