"""The command line, ``jaxode-diffusion SUBCOMMAND``: one module per subcommand, no library code.

Files:

* ``app.py``: the entry point :func:`main`, the shared error handler and the list of subcommands;
* ``args.py``: the argument types and comma-list parsers every subcommand uses;
* ``models.py``: ``train`` and ``sample``;
* ``convergence.py``, ``regularity.py``, ``likelihood.py``, ``study.py``, ``tune.py``: the
  subcommands of those names.
"""

from jaxode_diffusion.cli.app import main

__all__ = ["main"]
