"""The three descriptions of the project agree: pyproject.toml, conda.yaml, MLproject."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from alertclf.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def pyproject_pins() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(_split(dep) for dep in data["project"]["dependencies"])


def conda_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return dict(_split(dep) for dep in pip if "==" in dep)


def _split(requirement: str) -> tuple[str, str]:
    name, _, version = requirement.partition("==")
    assert version, f"{requirement!r} is not pinned with =="
    return name.strip().lower(), version.strip()


def test_every_dependency_is_pinned_identically_in_pyproject_and_conda():
    assert pyproject_pins() == conda_pins()
    assert pyproject_pins()["mlflow"] == "3.17.2"


def test_conda_python_matches_requires_python():
    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python == "python=3.11" and requires == ">=3.11"


def _options(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {opt for action in sub._actions for opt in action.option_strings}


MLPROJECT = yaml.safe_load((ROOT / "MLproject").read_text())


@pytest.mark.parametrize("entry", sorted(MLPROJECT["entry_points"]))
def test_mlproject_parameters_are_command_line_options(entry):
    spec = MLPROJECT["entry_points"][entry]
    options = _options(entry)
    for name in spec["parameters"]:
        flag = "--" + name.replace("_", "-")
        assert flag in options, f"MLproject {entry}.{name} has no {flag} in `alertclf {entry}`"
        assert f"{flag} {{{name}}}" in spec["command"], f"{entry}: {name} is not passed on"
    script = ROOT / spec["command"].split()[1]
    assert script.exists()
    assert f'main(["{entry}", *sys.argv[1:]])' in script.read_text()


def test_mlproject_uses_conda_yaml_and_has_the_contract_entry_points():
    assert MLPROJECT["conda_env"] == "conda.yaml"
    assert {"classify", "retrain"} <= set(MLPROJECT["entry_points"])
