"""The command line, ``jaxode-diffusion SUBCOMMAND``: one module per subcommand, no library code.

Files:

* ``app.py``: the entry point :func:`main`, the shared error handler and argparse helpers, and the
  ``convergence`` subcommand;
* ``models.py``: ``train`` and ``sample``;
* ``regularity.py``, ``likelihood.py``, ``study.py``, ``tune.py``: the subcommands of those names.
"""

from jaxode_diffusion.cli.app import main

__all__ = ["main"]
