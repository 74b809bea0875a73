"""The install pins: .ci/constraints.txt holds the versions the tests pass with, and the README's install and CI use it."""
from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

CONSTRAINTS = ROOT / ".ci" / "constraints.txt"


def pinned() -> dict[str, Version]:
    """Package name -> the version .ci/constraints.txt pins it to."""
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            assert canonicalize_name(name) not in pins, f"{name} is pinned twice"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_dependency_is_pinned_to_a_version_it_allows():
    """A dependency added to pyproject.toml without a pin would install whatever is newest on the day; one whose
    range was changed past its pin would make `pip install -c` fail to resolve."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = pinned()
    for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in {CONSTRAINTS.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"{CONSTRAINTS.name} pins {requirement.name}=={pins[name]}, outside pyproject.toml's {requirement.specifier}"


def test_the_readme_install_and_ci_use_the_pins():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -c .ci/constraints.txt -e '.[test]'" in readme
    assert "pip install -q -c .ci/constraints.txt -e '.[test]'" in ci
