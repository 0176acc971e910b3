"""The model constructor checks of fuxictr_ext.config: the value back when it is allowed, else
a ConfigError (a ValueError) naming the key, the value and what is allowed."""

import numpy as np
import pytest

from fuxictr_ext.config import (ConfigError, check_arg, check_choice, check_non_negative, check_non_negative_int,
                                check_positive_int, check_positive_ints, check_probability)


@pytest.mark.parametrize("check,value", [
    (check_positive_int, 1), (check_positive_int, np.int64(3)), (check_non_negative_int, 0),
    (check_non_negative, 0.0), (check_non_negative, 2), (check_probability, 0), (check_probability, 0.5),
])
def test_allowed_values_come_back(check, value):
    assert check("key", value) == value


@pytest.mark.parametrize("check,value,expected", [
    (check_positive_int, 0, "key=0 must be a whole number >= 1"),
    (check_positive_int, 2.0, "key=2.0 must be a whole number >= 1"),
    (check_positive_int, True, "key=True must be a whole number >= 1"),
    (check_positive_int, None, "key=None must be a whole number >= 1"),
    (check_non_negative_int, -1, "key=-1 must be a whole number >= 0"),
    (check_non_negative, float("nan"), "key=nan must be a number >= 0"),
    (check_non_negative, "1e-3", "key='1e-3' must be a number >= 0"),
    (check_probability, 1.0, r"key=1.0 must be a number in \[0, 1\)"),
    (check_probability, -0.1, r"key=-0.1 must be a number in \[0, 1\)"),
])
def test_bad_values_name_the_key_the_value_and_the_range(check, value, expected):
    with pytest.raises(ConfigError, match=f"^{expected}$"):
        check("key", value)


def test_optional_positive_int_takes_null():
    assert check_positive_int("fm_rank", None, optional=True) is None
    with pytest.raises(ConfigError, match=r"^fm_rank=0 must be a whole number >= 1 or null$"):
        check_positive_int("fm_rank", 0, optional=True)


def test_positive_ints_is_a_list_of_widths():
    assert check_positive_ints("units", (4, 2)) == [4, 2]
    assert check_positive_ints("units", []) == []
    for bad in ([4, 0], "44", 4, [4, 2.5]):
        with pytest.raises(ConfigError, match=r"^units=.* must be a list of whole numbers >= 1"):
            check_positive_ints("units", bad)
    with pytest.raises(ConfigError, match=r"^units=\[\] must be a list of at least 1 whole numbers >= 1"):
        check_positive_ints("units", [], min_length=1)


def test_choice_matches_without_case_and_suggests_the_nearest():
    assert check_choice("router", "Per_Field", ("shared", "per_field")) == "per_field"
    assert check_choice("norm", None, ("LayerNorm", "none")) == "none"
    with pytest.raises(ConfigError, match=r"^router='perfield' must be one of \['shared', 'per_field'\]; "
                                          r"did you mean 'per_field'\?$"):
        check_choice("router", "perfield", ("shared", "per_field"))
    with pytest.raises(ConfigError, match=r"^router='gate' must be one of \['shared', 'per_field'\]$"):
        check_choice("router", "gate", ("shared", "per_field"))


def test_check_arg_is_the_general_form():
    assert check_arg(True, "channel_dim", 8, "a divisor of 16") == 8
    with pytest.raises(ValueError, match=r"^channel_dim=3 must be a divisor of embedding_dim=16$"):
        check_arg(16 % 3 == 0, "channel_dim", 3, "a divisor of embedding_dim=16")
