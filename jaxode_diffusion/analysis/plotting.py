"""Every figure the package draws: regularity profiles, the study report's panels, sample plots.

All figures are drawn on a bare :class:`matplotlib.figure.Figure`, whose ``savefig`` renders
with the Agg canvas; pyplot is never imported, so no GUI backend is touched and the global
backend a user has chosen is left alone. Each function writes one PNG and returns its path (or
file name, for the report's panels, which link them relatively).

Users: :mod:`jaxode_diffusion.analysis.regularity` (re-exports :func:`plot_profile`),
:mod:`jaxode_diffusion.study.report` (the study's panels) and the CLI (``sample`` writes
:func:`plot_samples`, ``regularity`` writes :func:`plot_profile`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "plot_profile",
    "plot_samples",
    "save_png",
    "plot_tv_vs_hmax",
    "plot_tv_errorbar",
    "plot_bound_families",
]


def _loglog_panel(ax, *, xlabel: str, ylabel: str, title: str, title_size=None, legend_size=8) -> None:
    """The common dressing of a log-log panel: scales, labels, title, grid, legend."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=title_size)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=legend_size)


def _save_panel(fig: Figure, path) -> str:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


# ------------------------------------------------------------------------------------------
# regularity profiles
# ------------------------------------------------------------------------------------------
_PROFILE_LABELS = {
    "jacobian_spectral": ("$\\|Ds\\|_2$", "$\\sigma^2\\|Ds\\|_2$"),
    "jacobian_fro": ("$\\|Ds\\|_F$", "$\\sigma^2\\|Ds\\|_F$"),
    "second_operator": ("$\\|D^2s\\|_{op}$", "$\\sigma^3\\|D^2s\\|_{op}$"),
    "second_fro": ("$\\|D^2s\\|_F$", "$\\sigma^3\\|D^2s\\|_F$"),
}
_PROFILE_COLORS = {"jacobian_spectral": "C0", "jacobian_fro": "C1", "second_operator": "C2",
                   "second_fro": "C3"}
_SOURCE_STYLES = {"trajectory": "-", "data": "--"}


def plot_profile(profile, path, *, stat: str = "q50", band: str | None = "max", title: str | None = None):
    """Plot a regularity profile to a PNG: raw and sigma-weighted norms vs ``t`` and ``lambda``.

    A 2 x 4 grid, log ``y`` axes: rows raw / weighted (``sigma^2 ||Ds||``, ``sigma^3 ||D^2 s||``);
    columns first derivative against ``t`` (log axis) and against ``lambda = log(alpha/sigma)``,
    then the same for the second derivative. Colours tell the norm, solid lines trajectory
    points and dashed lines noised data; a line is the batch statistic ``stat``, the shaded
    band reaches up to ``band``.

    Args:
        profile: a :class:`~jaxode_diffusion.analysis.regularity.RegularityProfile` or its ``to_dict()``
            (e.g. a ``regularity.json`` file loaded with ``json.load``).
        path: output file (``.png``).
        stat, band: statistics to draw (``"q50"``, ``"q90"``, ``"max"``, ``"mean"``, ...;
            ``band=None`` draws no band).
        title: figure title (default: from the profile's settings).

    Returns:
        The path written.

    Raises:
        ValueError: if ``stat`` or ``band`` is not a statistic of the profile.

    Example:
        >>> import jax, os, tempfile
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> from jaxode_diffusion.analysis.regularity import profile as regularity_profile
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> p = regularity_profile(gm.score_fn(vp), vp, t_grid=[0.05, 0.5], source="data",
        ...                        x_source=gm.sample(jax.random.PRNGKey(1), 4))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     os.path.getsize(plot_profile(p, os.path.join(d, "p.png"))) > 0
        True
    """
    if isinstance(profile, Mapping):
        from jaxode_diffusion.analysis.regularity.profiles import RegularityProfile

        profile = RegularityProfile.from_dict(profile)
    t = np.asarray(profile.t)
    lam = np.asarray(profile.lam)
    fig = Figure(figsize=(20, 8.5), constrained_layout=True)
    axes = fig.subplots(2, 4)
    xaxes = ((t, "t (log scale)", True), (lam, "$\\lambda = \\log(\\alpha/\\sigma)$", False))
    for row, weighting in enumerate(("raw", "weighted")):
        for group, prefix in enumerate(("jacobian", "second")):
            curves = [c for c in profile.curves if c.quantity.startswith(prefix)]
            for k, (xvals, xlabel, logx) in enumerate(xaxes):
                ax = axes[row, 2 * group + k]
                if not curves:
                    ax.set_visible(False)
                    continue
                for c in curves:
                    stats = c.stats(weighting)
                    y = np.asarray(stats.stat(stat), dtype=float)
                    ax.plot(xvals, y, _SOURCE_STYLES.get(c.source, ":"), color=_PROFILE_COLORS[c.quantity],
                            marker=".", label=f"{_PROFILE_LABELS[c.quantity][row]} {c.source}")
                    if band is not None:
                        ax.fill_between(xvals, y, np.asarray(stats.stat(band), dtype=float),
                                        color=_PROFILE_COLORS[c.quantity], alpha=0.08, linewidth=0)
                ax.set_yscale("log")
                if logx:
                    ax.set_xscale("log")
                ax.set_xlabel(xlabel)
                what = "first derivative" if prefix == "jacobian" else "second derivative"
                scale = "" if row == 0 else (" x sigma^2" if prefix == "jacobian" else " x sigma^3")
                ax.set_ylabel(f"{what} norm{scale}")
                ax.set_title(f"batch {stat} (band to {band})" if band else f"batch {stat}", fontsize=9)
                ax.grid(True, which="major", alpha=0.3)
                ax.legend(fontsize=8)
    s = profile.settings
    fig.suptitle(title or f"Score regularity: {s.process}, d={s.dim}, batch={s.batch}, method={s.method}")
    fig.savefig(path, dpi=100)
    return path


# ------------------------------------------------------------------------------------------
# samples
# ------------------------------------------------------------------------------------------
def plot_samples(samples, path, *, kind: str = "vector", raw_range: Sequence[float] | None = None):
    """Scatter plot (2-D points), image grid (images) or first-two-coordinates scatter (vectors).

    Args:
        samples: ``(n, d)`` vectors or ``(n, H, W, C)`` images.
        path: output file (``.png``).
        kind: ``"image"`` draws up to 64 images in a grid; anything else a scatter plot.
        raw_range: ``(lo, hi)`` pixel values mapped to black/white (default: the 0.5 and 99.5
            percentiles of the samples).

    Returns:
        The path written.

    Example:
        >>> import numpy as np, os, tempfile
        >>> x = np.random.default_rng(0).normal(size=(100, 2))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     os.path.getsize(plot_samples(x, os.path.join(d, "s.png"))) > 0
        True
    """
    x = np.asarray(samples)
    if kind == "image":
        n = min(64, x.shape[0])
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        fig = Figure(figsize=(cols, rows))
        axes = fig.subplots(rows, cols, squeeze=False)
        lo, hi = (np.percentile(x, 0.5), np.percentile(x, 99.5)) if raw_range is None else raw_range
        for i, ax in enumerate(axes.ravel()):
            ax.axis("off")
            if i < n:
                img = np.clip((x[i] - lo) / max(hi - lo, 1e-12), 0, 1)
                gray = img.shape[-1] == 1
                ax.imshow(img[..., 0] if gray else img, cmap="gray" if gray else None)
        fig.subplots_adjust(wspace=0.05, hspace=0.05)
    else:
        fig = Figure(figsize=(5, 5))
        ax = fig.add_subplot(1, 1, 1)
        ax.scatter(x[:, 0], x[:, 1] if x.shape[1] > 1 else np.zeros(len(x)), s=2, alpha=0.5)
        ax.set_aspect("equal")
        ax.set_title(f"{x.shape[0]} samples" + ("" if x.shape[1] == 2 else " (first two coordinates)"))
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def save_png(samples, path, kind: str, meta: Mapping) -> None:
    """:func:`plot_samples` of raw-unit samples with a run's data description ``meta``.

    ``kind`` is ``"image"`` or ``"vector"``; ``meta`` is the ``data`` entry of a run's
    configuration, whose ``raw_range`` (when present) maps pixel values to black and white.

    Example:
        >>> import numpy as np, os, tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     save_png(np.zeros((4, 2)), os.path.join(d, "s.png"), "vector", {})
        ...     os.path.exists(os.path.join(d, "s.png"))
        True
    """
    plot_samples(samples, path, kind=kind, raw_range=meta.get("raw_range"))


# ------------------------------------------------------------------------------------------
# the study report's panels (inputs: sections of the study's metrics dict)
# ------------------------------------------------------------------------------------------
def plot_tv_vs_hmax(disc: Mapping, path) -> str:
    """One log-log panel per ODE form: exact-density TV against ``H_max``, one line per order.

    Args:
        disc: the study's discretisation section: ``rows`` (``form``, ``order``, ``solver``,
            ``h_max``, ``tv`` with ``value``/``stderr``) and ``fits`` (``form``, ``order``, ``slope``).
        path: output file.

    Returns:
        The file name written (for a relative link in the report).

    Example:
        >>> import os, tempfile
        >>> tv = lambda v: {"value": v, "stderr": v / 10}
        >>> disc = {"rows": [{"form": "x-t", "order": 2, "solver": "x-t:heun", "h_max": h, "tv": tv(h**2)}
        ...                  for h in (0.1, 0.05)], "fits": [{"form": "x-t", "order": 2, "slope": 2.0}]}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     plot_tv_vs_hmax(disc, os.path.join(d, "tv.png"))
        'tv.png'
    """
    forms = sorted({r["form"] for r in disc["rows"]}, key=lambda f: (f != "x-t", f))
    fig = Figure(figsize=(5.2 * len(forms), 4.2))
    for i, form in enumerate(forms):
        ax = fig.add_subplot(1, len(forms), i + 1)
        for p in sorted({r["order"] for r in disc["rows"]}):
            rs = [r for r in disc["rows"] if r["form"] == form and r["order"] == p]
            h = np.array([r["h_max"] for r in rs])
            tv = np.array([r["tv"]["value"] for r in rs])
            se = np.array([r["tv"]["stderr"] for r in rs])
            fit = next(f for f in disc["fits"] if f["form"] == form and f["order"] == p)
            ax.errorbar(h, np.maximum(tv, 1e-16), yerr=se, marker="o", capsize=2,
                        label=f"p={p} ({rs[0]['solver'].split(':')[1]}), slope {fit['slope']:.2f}")
        _loglog_panel(ax, xlabel="H_max (largest step in the form's variable)",
                      ylabel="TV(p_t_end, sampler output)", title=f"{form} form: exact-density TV vs step")
    return _save_panel(fig, path)


def plot_tv_errorbar(x, rows: Sequence[Mapping], *, label: str, xlabel: str, title: str, path,
                     hline: tuple[float, str] | None = None) -> str:
    """One log-log TV panel with Monte Carlo error bars (``rows[i]["tv"]`` at ``x[i]``).

    Args:
        x: the abscissae.
        rows: one mapping per point with ``tv`` holding ``value`` and ``stderr``.
        label, xlabel, title: text of the line, the x axis and the panel.
        path: output file.
        hline: optional ``(value, label)`` of a dashed horizontal reference line.

    Returns:
        The file name written.

    Example:
        >>> import os, tempfile
        >>> rows = [{"tv": {"value": v, "stderr": 0.01}} for v in (0.1, 0.2)]
        >>> with tempfile.TemporaryDirectory() as d:
        ...     plot_tv_errorbar([1, 2], rows, label="TV", xlabel="d", title="t",
        ...                      path=os.path.join(d, "e.png"))
        'e.png'
    """
    fig = Figure(figsize=(5.2, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.errorbar(x, [r["tv"]["value"] for r in rows], yerr=[r["tv"]["stderr"] for r in rows],
                marker="o", capsize=2, label=label)
    if hline is not None:
        ax.axhline(hline[0], color="k", ls="--", label=hline[1])
    _loglog_panel(ax, xlabel=xlabel, ylabel="TV", title=title)
    return _save_panel(fig, path)


def plot_bound_families(families: Sequence[Mapping], path) -> str:
    """Measured TV beside the bound with fitted constants, one log-log panel per family.

    Args:
        families: mappings with ``name``, ``x``, ``x_name``, ``measured`` and ``fitted``.
        path: output file.

    Returns:
        The file name written.

    Example:
        >>> import os, tempfile
        >>> fam = {"name": "rk4", "x": [0.1, 0.2], "x_name": "H", "measured": [1e-3, 2e-2],
        ...        "fitted": [1.1e-3, 1.8e-2]}
        >>> with tempfile.TemporaryDirectory() as d:
        ...     plot_bound_families([fam], os.path.join(d, "b.png"))
        'b.png'
    """
    n = max(len(families), 1)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows))
    for i, f in enumerate(families):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot(f["x"], f["measured"], "o-", label="measured TV")
        ax.plot(f["x"], f["fitted"], "s--", label="bound, fitted constants")
        _loglog_panel(ax, xlabel=f["x_name"], ylabel="TV", title=f["name"], title_size=9, legend_size=7)
    return _save_panel(fig, path)
