"""The settings module's rules for every config: values echoed shortened, numbers within float32."""

import time

import pytest

from ngl_keras import config
from ngl_keras.gp import engine
from ngl_keras.settings import FLOAT32_MAX, shown

pytestmark = pytest.mark.any_backend  # plain Python: the same on every backend


def test_a_long_value_is_shown_cut_with_its_type_and_size():
    assert shown("a" * 50_000_000) == "'" + "a" * 79 + "… (str of 50,000,000 characters)"
    assert shown(list(range(10_000_000))).endswith("… (list of 10,000,000 items)")
    assert len(shown(list(range(10_000_000)))) == 80 + len("… (list of 10,000,000 items)")
    assert shown({"a": [1, 2]}) == "{'a': [1, 2]}"
    assert shown(1.5) == "1.5"


def test_shortening_a_billion_aliased_strings_takes_no_time():
    value = ["lol"] * 10
    for _ in range(8):
        value = [value] * 10  # 10^9 strings, as nested YAML aliases stand for
    started = time.perf_counter()
    text = shown(value)
    assert time.perf_counter() - started < 0.1
    assert text.endswith("… (list of 10 items)") and text.startswith("[[[[[[[[['lol', 'lol'")


def test_a_settings_message_echoes_a_huge_value_shortened():
    with pytest.raises(ValueError) as error:
        config.build(config.Optimizer, {"name": "adam", "learning_rate": "x" * 50_000_000}, "f.yaml: optimizer")
    assert str(error.value) == ("f.yaml: optimizer: 'learning_rate' must be a number; got '" + "x" * 79
                                + "… (str of 50,000,000 characters).")


@pytest.mark.parametrize("value", [1e39, 10 ** 400, -1e300])
def test_a_number_float32_cannot_hold_is_refused_saying_so(value):
    with pytest.raises(ValueError, match=r"'learning_rate' must lie within float32's range \(\|x\| <= 3.403e\+38\)"):
        config.build(config.Optimizer, {"name": "adam", "learning_rate": value}, "f.yaml: optimizer")


def test_a_constant_range_whose_width_overflows_is_refused_naming_it():
    with pytest.raises(ValueError) as error:
        engine.PrimitiveSet(operators=["add"], constant_range=[-1e308, 1e308], variables=("p", "y"))
    assert str(error.value).startswith("constant_range must lie within ±1.7e+38 (half float32's largest number)")
    wide = engine.PrimitiveSet(operators=["add"], constant_range=[-FLOAT32_MAX / 2, FLOAT32_MAX / 2],
                               variables=("p", "y"))
    assert wide.constant_range[1] - wide.constant_range[0] == pytest.approx(FLOAT32_MAX)
    with pytest.raises(ValueError, match=r"constant_range must be \[low, high\], two finite numbers with low < high; "
                                         r"got \[1.0\]"):
        engine.PrimitiveSet(operators=["add"], constant_range=[1.0], variables=("p", "y"))
