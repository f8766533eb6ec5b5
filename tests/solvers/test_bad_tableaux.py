"""Bad Butcher tableaux: each raises ValueError whose message names the entry and the way out
(``allow_inconsistent=True``), and that flag accepts them."""

import pytest

from jaxode_diffusion.solvers.tableaux import ButcherTableau

# (id, thunk, regex the message must match)
CASES = [
    ("tab_b_sum", lambda: ButcherTableau(a=[[0, 0], [1, 0]], b=[0.5, 0.4]), r"sum\(b\) = 0\.9.*order is 0.*allow_inconsistent=True"),
    ("tab_c_above_one", lambda: ButcherTableau(a=[[0, 0], [2, 0]], b=[0.5, 0.5]), r"c\[1\] = 2\.0.*allow_inconsistent"),
    ("tab_c_negative", lambda: ButcherTableau(a=[[0, 0], [-1, 0]], b=[0.5, 0.5]), r"c\[1\] = -1\.0.*order"),
    ("tab_b_error_sum", lambda: ButcherTableau(a=[[0, 0], [1, 0]], b=[0.5, 0.5], b_error=[0.5, 0.4]), r"sum\(b_error\).*allow_inconsistent"),
    ("tab_from_lower_b_sum", lambda: ButcherTableau.from_lower([[1.0]], b=[1.0, 1.0]), r"sum\(b\) = 2\.0.*allow_inconsistent"),
    ("tab_flag_not_bool", lambda: ButcherTableau(a=[[0]], b=[1.0], allow_inconsistent="yes"), r"`allow_inconsistent`"),
]


@pytest.mark.parametrize("thunk, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_tableau_is_a_clear_value_error(thunk, match):
    with pytest.raises(ValueError, match=match):
        thunk()


def test_case_ids_unique():
    assert len({c[0] for c in CASES}) == len(CASES)


def test_opt_in_flag_accepts_inconsistent_tableau():
    tab = ButcherTableau(a=[[0, 0], [2, 0]], b=[0.5, 0.4], allow_inconsistent=True)
    assert tab.order == 0 and tab.c.tolist() == [0.0, 2.0]
    assert ButcherTableau.from_lower([[1.0]], b=[1.0, 1.0], allow_inconsistent=True).order == 0
