"""The version the package reports is the newest entry of CHANGELOG.md (Keep a Changelog style).

Bump ``tempattn.__version__`` when the public API changes, and add the version's entry (Added /
Changed / Deprecated / Removed / Fixed / Security) to CHANGELOG.md. pyproject.toml, when it states
a static version rather than reading ``tempattn.__version__``, must state the same one.
"""
import re
import sys
from pathlib import Path

import pytest

import tempattn

REPO = Path(__file__).resolve().parents[2]
CHANGELOG = REPO / "CHANGELOG.md"
RELEASE = re.compile(r"^## \[(?P<version>\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?)\] - (?P<date>\d{4}-\d{2}-\d{2})\s*$")
UNRELEASED = re.compile(r"^## \[Unreleased\]\s*$")
SECTIONS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def _entries():
    """(version or 'Unreleased', date or None, [section names]) in file order."""
    entries = []
    for line in CHANGELOG.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            release = RELEASE.match(line)
            if release:
                entries.append((release.group("version"), release.group("date"), []))
            elif UNRELEASED.match(line):
                entries.append(("Unreleased", None, []))
            else:
                pytest.fail(f"CHANGELOG.md: version heading {line!r} is not '## [X.Y.Z] - YYYY-MM-DD' or "
                            "'## [Unreleased]'")
        elif line.startswith("### "):
            assert entries, f"CHANGELOG.md: section {line!r} before the first version"
            entries[-1][2].append(line[4:].strip())
    return entries


def _key(version: str):
    return tuple(int(x) for x in re.match(r"\d+\.\d+\.\d+", version).group(0).split("."))


def test_package_reports_the_newest_changelog_version():
    released = [e for e in _entries() if e[0] != "Unreleased"]
    assert released, "CHANGELOG.md has no released version"
    assert tempattn.__version__ == released[0][0], (
        f"tempattn.__version__ is {tempattn.__version__!r} but the newest CHANGELOG.md entry is {released[0][0]!r}")


def test_changelog_is_well_formed():
    entries = _entries()
    assert all(e[0] != "Unreleased" for e in entries[1:]), "only the top entry may be [Unreleased]"
    released = [e for e in entries if e[0] != "Unreleased"]
    versions = [_key(v) for v, _, _ in released]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions), \
        "versions must be unique and newest first"
    dates = [d for _, d, _ in released]
    assert dates == sorted(dates, reverse=True), "release dates must be newest first"
    for version, _, sections in released:
        assert sections, f"{version}: no sections"
        assert set(sections) <= SECTIONS, f"{version}: unknown sections {set(sections) - SECTIONS}"


def test_pyproject_states_the_same_version():
    pyproject = REPO / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("no pyproject.toml")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        pytest.skip("tomllib needs Python 3.11")
    project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    if "version" in project.get("dynamic", []):
        return  # read from tempattn.__version__ at build time
    assert project.get("version") == tempattn.__version__, (
        f"pyproject.toml states version {project.get('version')!r}, tempattn.__version__ is "
        f"{tempattn.__version__!r}; make them one (dynamic = [\"version\"] with "
        "[tool.setuptools.dynamic] version = {attr = \"tempattn.__version__\"})")
