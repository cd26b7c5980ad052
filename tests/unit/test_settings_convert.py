import pytest

from app.settings import Settings, SettingsError


def test_convert_timeout_defaults_inside_the_load_balancers_30_s():
    assert Settings.from_env({}).convert_timeout_s == 15.0


def test_convert_timeout_is_parsed_and_bounded():
    assert Settings.from_env({"CONVERT_TIMEOUT": "2.5"}).convert_timeout_s == 2.5
    assert Settings.from_env({"CONVERT_TIMEOUT": "1"}).convert_timeout_s == 1.0
    for bad in ("0.99", "0", "soon"):
        with pytest.raises(SettingsError):
            Settings.from_env({"CONVERT_TIMEOUT": bad})
