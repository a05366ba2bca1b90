"""The package's metadata agrees with the requirement files, and its command is the one `python -m` runs."""
import importlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_lines(name: str) -> list[str]:
    lines = (re.sub(r"#.*", "", line).strip() for line in (ROOT / name).read_text().splitlines())
    return [line for line in lines if line]


def test_dependencies_are_the_lines_of_requirements_txt():
    assert sorted(PYPROJECT["project"]["dependencies"]) == sorted(requirement_lines("requirements.txt"))


def test_test_extra_is_the_lines_of_requirements_dev_txt():
    assert sorted(PYPROJECT["project"]["optional-dependencies"]["test"]) == sorted(requirement_lines("requirements-dev.txt"))


def test_console_command_runs_the_same_main_as_python_m(capsys):
    module, _, function = PYPROJECT["project"]["scripts"]["reversion-studio"].partition(":")
    main = getattr(importlib.import_module(module), function)
    assert "from .cli import main" in (ROOT / "reversion_core" / "__main__.py").read_text()
    assert main is importlib.import_module("reversion_core.cli").main
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "{train,generate,inspect,world,evaluate,score}" in capsys.readouterr().out


def test_pytest_registers_the_slow_and_browser_markers(pytestconfig):
    names = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert {"slow", "browser"} <= names


def test_benchmarks_and_scripts_import_the_package_instead_of_loading_files_by_path():
    for path in [*ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*.py")]:
        text = path.read_text()
        assert "spec_from_file_location" not in text, path.name
        assert "Path(__file__).resolve().parent))" not in text, path.name  # a script's own folder on sys.path


def test_every_test_named_slow_in_conftest_still_exists():
    from conftest import SLOW_TESTS

    for entry in SLOW_TESTS:
        module, name = entry.split("::")
        assert f"def {name}(" in (ROOT / "tests" / module).read_text(), entry
