"""The project's own promises: pins agree, CI calls the README's test command, notebooks are committed clean."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_pins_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | {d for extra in project["optional-dependencies"].values() for d in extra}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) - {"-e ."} == wanted


def test_readme_gives_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    assert re.search(r"^make test\b", (ROOT / ".ci" / "run").read_text(), re.M)
    assert "MEASURED-FIGURES" not in readme  # the benchmark figures are filled in


def test_makefile_installs_a_cpu_torch_without_cuda():
    makefile = (ROOT / "Makefile").read_text()
    assert "torch==2.13.0" in makefile and "whl/cpu" in makefile and "nvidia-smi" in makefile
