"""Forward processes: the noise schedule ``x_t = alpha(t) x_0 + sigma(t) eps`` and its conventions.

Files:

* ``base.py``: :class:`TimeRange` and :class:`ForwardProcess` (any ``alpha(t), sigma(t)``, with
  ``f``, ``g^2``, the log-SNR and its inverse derived by autodiff; the constructors
  ``from_alpha_sigma``, ``from_alphas_cumprod``, ``from_betas``), the variance-preserving base
  class and the argument checks the other files share;
* ``custom.py``: :class:`CustomProcess`, a process from user functions, checked densely when built;
* ``builtin.py``: the continuous built-ins ``VPLinear``, ``VPCosine``, ``SubVP``, ``VE``, ``EDM``,
  ``RectifiedFlow`` (closed forms for the log-SNR and its inverse);
* ``discrete.py``: discrete DDPM tables as continuous processes (:class:`DiscreteVP`) and the
  checks of a table;
* ``registry.py``: :func:`get_process`, the built-ins by name;
* ``parameterizations.py``: conversions between what a network predicts (``eps``, ``x0``, ``v``,
  ``flow``, ``score``) under a process (Tweedie's formula and friends).

Import the names from this package (``from jaxode_diffusion.processes import VPLinear``); the
files are its layout, not its API. This is the lowest layer of the package: it imports nothing
else from it.
"""

from jaxode_diffusion.processes import parameterizations
from jaxode_diffusion.processes.base import ForwardProcess, TimeRange
from jaxode_diffusion.processes.builtin import EDM, VE, RectifiedFlow, SubVP, VPCosine, VPLinear
from jaxode_diffusion.processes.custom import CustomProcess
from jaxode_diffusion.processes.discrete import DiscreteVP
from jaxode_diffusion.processes.registry import get_process

__all__ = [
    "CustomProcess",
    "DiscreteVP",
    "EDM",
    "ForwardProcess",
    "get_process",
    "parameterizations",
    "RectifiedFlow",
    "SubVP",
    "TimeRange",
    "VE",
    "VPCosine",
    "VPLinear",
]
