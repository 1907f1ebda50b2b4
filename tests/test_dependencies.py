"""The declared dependencies: pyproject.toml and requirements.txt agree, every import of the
package is declared, and constraints.txt pins each to the version this environment runs."""
from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers import REPO


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


def requirement_lines(path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def pins() -> dict[str, str]:
    """constraints.txt as canonical name -> exact version."""
    return {canonicalize_name(name): version for name, version in
            (line.split("==") for line in requirement_lines(REPO / "constraints.txt"))}


def imported_top_names() -> set[str]:
    """The top-level module names that src/compete imports, anywhere in a file."""
    names = set()
    for path in (REPO / "src" / "compete").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"compete", "__future__"}


def test_requirements_txt_lists_exactly_the_pyproject_dependencies():
    assert [Requirement(line) for line in requirement_lines(REPO / "requirements.txt")] == declared()


def test_every_third_party_import_is_declared():
    distributions = importlib.metadata.packages_distributions()
    names = {canonicalize_name(r.name) for r in declared()}
    undeclared = [module for module in sorted(imported_top_names())
                  if not names & {canonicalize_name(d) for d in distributions.get(module, [module])}]
    assert not undeclared, f"imported by src/compete but not in pyproject.toml: {undeclared}"
    assert {"numpy", "sklearn", "cv2", "huggingface_hub", "safetensors"} <= imported_top_names()


def test_ranges_admit_what_the_code_calls():
    ranges = {canonicalize_name(r.name): r.specifier for r in declared()}
    assert "1.26" not in ranges["numpy"] and "2.0" in ranges["numpy"]  # np.bitwise_count
    assert "1.8" not in ranges["scikit-learn"] and "1.9" in ranges["scikit-learn"]  # replace_undefined_by
    assert "2.1" not in ranges["albumentations"] and "2.0.8" in ranges["albumentations"]  # archived


def test_constraints_pin_every_dependency_to_the_installed_version_within_its_range():
    pinned = pins()
    assert pinned["torch"] == "2.14.1" and pinned["torchvision"] == "0.29.1"
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not pinned in constraints.txt"
        assert pinned[name] in requirement.specifier, f"{name}=={pinned[name]} outside {requirement.specifier}"
        assert importlib.metadata.version(requirement.name) == pinned[name]


def test_run_sh_installs_with_the_constraints():
    assert "-c constraints.txt" in (REPO / "run.sh").read_text()


def test_the_compete_console_script_names_the_cli():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["compete"].split(":")
    assert callable(getattr(__import__(module, fromlist=[function]), function))
