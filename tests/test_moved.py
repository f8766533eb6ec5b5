"""The shims of the old names and module paths (``jaxode_diffusion._moved``): each serves the object
of its new home with a MovedWarning; the removed ``jaxode_diffusion.metrics`` raises ImportError
saying where its contents went; every entry points at something that exists.

The test session turns a MovedWarning into an error (pyproject ``filterwarnings``);
``pytest.warns`` catches it here. Imports of old paths are undone after each test, so that a
later use still goes through the shim.
"""

import importlib
import sys

import pytest

import jaxode_diffusion as jd
from jaxode_diffusion import _moved
from jaxode_diffusion._moved import MovedWarning


@pytest.fixture
def forget_old_paths():
    """Undo what importing old module paths leaves behind (``sys.modules`` entries, attributes)."""
    before = set(sys.modules)
    yield
    for name in set(_moved.MODULES) - before:
        sys.modules.pop(name, None)
        parent, _, child = name.rpartition(".")
        if parent in sys.modules and child not in _moved.MODULE_ATTRS and child in vars(sys.modules[parent]):
            delattr(sys.modules[parent], child)
    for child in _moved.MODULE_ATTRS:
        if f"{jd.__name__}.{child}" not in before:
            vars(jd).pop(child, None)


def test_old_top_level_name_warns_and_is_the_new_object():
    from jaxode_diffusion.sampling.grids import make_grid

    with pytest.warns(MovedWarning, match=r"jaxode_diffusion\.make_grid moved to jaxode_diffusion\.sampling\.grids\.make_grid"):
        old = jd.make_grid
    assert old is make_grid


def test_old_module_attribute_warns_and_is_the_new_module(forget_old_paths):
    from jaxode_diffusion.sampling import grids

    with pytest.warns(MovedWarning, match=r"jaxode_diffusion\.grids moved to jaxode_diffusion\.sampling\.grids"):
        old = jd.grids
    assert old is grids


def test_old_module_path_import_warns_and_is_the_new_module(forget_old_paths):
    from jaxode_diffusion.tuning import tuner

    with pytest.warns(MovedWarning, match=r"jaxode_diffusion\.tune moved to jaxode_diffusion\.tuning\.tuner"):
        old = importlib.import_module("jaxode_diffusion.tune")
    assert old is tuner
    with pytest.warns(MovedWarning):
        from jaxode_diffusion.error_grid import error_grid  # the statement form, a name from the old module
    assert error_grid is jd.tuning.error_grids.error_grid


def test_removed_metrics_module_raises_import_error_naming_the_new_homes(forget_old_paths):
    with pytest.raises(ImportError, match=r"jaxode_diffusion\.metrics was removed.*analysis\.distances.*analysis\.density"):
        importlib.import_module("jaxode_diffusion.metrics")
    with pytest.raises(ImportError, match="was removed"):
        from jaxode_diffusion import metrics  # noqa: F401
    assert "jaxode_diffusion.metrics" not in sys.modules


def test_unknown_top_level_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        jd.no_such_name  # noqa: B018


def test_every_entry_points_at_something_that_exists():
    missing = []
    for old, new in _moved.NAMES.items():
        module, attr = new.split(":")
        if not hasattr(importlib.import_module(module), attr):
            missing.append(f"{old} -> {new}")
    for old, new in {**_moved.MODULE_ATTRS, **{k: v for k, v in _moved.MODULES.items() if v}}.items():
        try:
            importlib.import_module(new)
        except ImportError as err:
            missing.append(f"{old} -> {new} ({err})")
    assert not missing, "shims pointing nowhere:\n" + "\n".join(missing)
    assert not set(_moved.NAMES) & set(jd.__all__), "an old top-level name is also a current one"
