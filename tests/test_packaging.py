"""One tested set of packages: the appliance installs what CI ran with, and the export tool writes
bundles for the daemon release it was tested beside."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

import edge_gesture

REPO = Path(__file__).resolve().parent.parent


def pins() -> dict[str, str]:
    out = {}
    for line in (REPO / "script" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def test_every_runtime_dependency_is_pinned_to_the_tested_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = pins()
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pinned, f"{req.name} is not in script/constraints.txt"
        assert req.specifier.contains(pinned[name]), f"{req.name}: pin {pinned[name]} outside {spec}"


def test_export_tool_requires_the_daemon_release_it_shares_the_manifest_with():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    export = tomllib.loads((REPO / "export" / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(d) for d in export["dependencies"] if Requirement(d).name == "edge-gesture"]
    assert [str(r.specifier) for r in wanted] == [f"=={project['version']}"]
    assert edge_gesture.__version__ == project["version"]
