"""Forward processes: the noise schedule ``x_t = alpha(t) x_0 + sigma(t) eps`` and its conventions.

Files:

* ``process.py``: :class:`ForwardProcess` (any ``alpha(t), sigma(t)``, with ``f``, ``g^2``, the
  log-SNR and its inverse derived by autodiff), the built-ins ``VPLinear``, ``VPCosine``, ``SubVP``,
  ``VE``, ``EDM``, ``RectifiedFlow``, discrete DDPM tables (``DiscreteVP``) and :func:`get_process`;
* ``parameterizations.py``: conversions between what a network predicts (``eps``, ``x0``, ``v``,
  ``flow``, ``score``) under a process (Tweedie's formula and friends).

This is the lowest layer of the package: it imports nothing else from it.
"""


from jaxode_diffusion.processes.process import (
    CustomProcess,
    DiscreteVP,
    EDM,
    ForwardProcess,
    get_process,
    RectifiedFlow,
    SubVP,
    TimeRange,
    VE,
    VPCosine,
    VPLinear,
)
from jaxode_diffusion.processes import parameterizations

__all__ = [
    "parameterizations",
    "CustomProcess",
    "DiscreteVP",
    "EDM",
    "ForwardProcess",
    "get_process",
    "RectifiedFlow",
    "SubVP",
    "TimeRange",
    "VE",
    "VPCosine",
    "VPLinear",
]
