"""The built-in processes by name: :func:`get_process`."""

from __future__ import annotations

from jaxode_diffusion.processes.base import ForwardProcess
from jaxode_diffusion.processes.builtin import EDM, VE, RectifiedFlow, SubVP, VPCosine, VPLinear
from jaxode_diffusion.processes.discrete import DiscreteVP

__all__ = ["get_process"]


_BUILTINS = {
    "vp": VPLinear,
    "vp_linear": VPLinear,
    "vp_cosine": VPCosine,
    "cosine": VPCosine,
    "subvp": SubVP,
    "sub_vp": SubVP,
    "ve": VE,
    "edm": EDM,
    "rectified_flow": RectifiedFlow,
    "rf": RectifiedFlow,
    # discrete tables (N = 1000), as continuous processes on [1/N, 1]
    "ddpm": DiscreteVP.ddpm_linear,
    "ddpm_linear": DiscreteVP.ddpm_linear,
    "scaled_linear": DiscreteVP.scaled_linear,
    "discrete_cosine": DiscreteVP.cosine,
}


def get_process(name: str | ForwardProcess) -> ForwardProcess:
    """Return a built-in process by name with default parameters; a process instance is returned unchanged.

    Names: ``vp_linear``, ``vp_cosine``, ``subvp``, ``ve``, ``edm``, ``rectified_flow``, and the
    discrete tables ``ddpm_linear``, ``scaled_linear``, ``discrete_cosine`` (:class:`DiscreteVP`).

    Raises:
        ValueError: for an unknown name; the message lists the names.

    Example:
        >>> type(get_process("vp-linear")).__name__, get_process("scaled_linear").num_train_timesteps
        ('VPLinear', 1000)
    """
    if isinstance(name, ForwardProcess):
        return name
    key = str(name).lower().replace("-", "_")
    if key not in _BUILTINS:
        raise ValueError(
            f"process={name!r} is not a built-in process; choose one of {sorted(set(_BUILTINS))} "
            "or build one with ForwardProcess.from_alpha_sigma(alpha_fn, sigma_fn)."
        )
    return _BUILTINS[key]()
