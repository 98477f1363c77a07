"""Every PYEXP_* setting a user gives is read in one place, with one kind of error."""

import pytest

from pyexp import environment
from pyexp.errors import ConfigError

SETTINGS = {
    "PYEXP_LEASE_SECONDS": (environment.lease_seconds, 60.0),
    "PYEXP_GRACE_SECONDS": (environment.grace_seconds, 20.0),
    "PYEXP_SLURM_TIMEOUT": (environment.slurm_timeout, 60.0),
    "PYEXP_SUBMIT_LOCK_SECONDS": (environment.submit_lock_seconds, 30.0),
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_seconds_setting_defaults_parses_and_rejects_the_same_way(name, monkeypatch):
    read, default = SETTINGS[name]
    monkeypatch.delenv(name, raising=False)
    assert read() == default
    monkeypatch.setenv(name, "2.5")
    assert read() == 2.5
    for bad in ("abc", "0", "-1", "inf", "nan"):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ConfigError, match=f"^{name}='{bad}': must be a positive number"):
            read()


def test_slurm_commands_and_the_config_file_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("PYEXP_SBATCH", "/fake/sbatch")
    monkeypatch.setenv("PYEXP_CONFIG", "")
    assert environment.slurm_command("sbatch") == "/fake/sbatch"
    assert environment.config_file() is None
    monkeypatch.delenv("PYEXP_SBATCH")
    monkeypatch.setenv("PYEXP_CONFIG", "/p/config.json")
    assert environment.slurm_command("sbatch") == "sbatch"
    assert environment.config_file() == "/p/config.json"
