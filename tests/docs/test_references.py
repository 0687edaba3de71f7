"""No dangling references: nothing in the repository points to a file outside it.

The contract, the dataset list and every other document a user needs live in the repository
(``docs/``, the README, ``benchmarks/``). These checks read every file git tracks (plus new,
not-ignored files, so a working tree is checked before its commit) and fail listing each offending
``path:line``:

- names of documents that were never part of the repository (a design file or a data list kept
  in a shared folder elsewhere) and paths into such a folder or into a developer's machine;
- relative paths (``../x``) that climb out of the repository from the file that holds them;
- Markdown links to a repository file that does not exist (or is git-ignored, so a fresh clone
  lacks it).
"""
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[2]

# Built from pieces so that this file does not match its own patterns.
_OUTSIDE = [
    (re.compile(r"\b" + "DES" + r"IGN\b(?:\.md)?"), "the design document outside the repository; cite docs/contract.md"),
    (re.compile(r"\b" + "DA" + r"TA\.md\b"), "the dataset list outside the repository; cite docs/models.md"),
    (re.compile(r"(?<![\w.-])" + "shared" + r"/"), "a shared folder outside the repository"),
    (re.compile(r"/" + "work" + r"/"), "an absolute path on a development machine"),
]
_RELATIVE = re.compile(r"[\w./-]*\.\./[\w./-]*")
_MD_LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SKIP_DIRS = ("docs/_build/",)
_MAX_BYTES = 4 << 20


def _repository_files() -> List[str]:
    """Tracked files and new files git does not ignore, as repository-relative posix paths."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the file list comes from git")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode("utf-8").split("\0")
    return sorted({p for p in listed if p and not p.startswith(_SKIP_DIRS) and (REPO / p).is_file()})


def _text(path: str):
    """The file's text, or None for binary or very large files."""
    full = REPO / path
    if full.stat().st_size > _MAX_BYTES:
        return None
    data = full.read_bytes()
    if b"\0" in data:
        return None
    return data.decode("utf-8", errors="replace")


FILES = None


def _files():
    global FILES
    if FILES is None:
        FILES = [(p, t) for p in _repository_files() if (t := _text(p)) is not None]
    return FILES


def _outside(path: str, target: str) -> bool:
    """Whether ``target``, relative to the directory of ``path``, leaves the repository."""
    resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
    return resolved == ".." or resolved.startswith("../")


def test_no_reference_to_documents_outside_the_repository():
    found = []
    for path, text in _files():
        for number, line in enumerate(text.splitlines(), 1):
            for pattern, why in _OUTSIDE:
                match = pattern.search(line)
                if match:
                    found.append(f"{path}:{number}: {match.group(0)!r} ({why}): {line.strip()[:160]}")
    assert not found, "references to files outside the repository:\n" + "\n".join(found)


def test_no_relative_path_leaves_the_repository():
    found = []
    for path, text in _files():
        for number, line in enumerate(text.splitlines(), 1):
            for match in _RELATIVE.finditer(line):
                if _outside(path, match.group(0)):
                    found.append(f"{path}:{number}: {match.group(0)!r} climbs out of the repository")
    assert not found, "relative paths that leave the repository:\n" + "\n".join(found)


def test_markdown_links_resolve_inside_the_repository():
    files = _files()
    present = set(_repository_files())
    directories = {parent.as_posix() for p in present for parent in Path(p).parents}
    found = []
    for path, text in files:
        if not path.endswith(".md"):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for match in _MD_LINK.finditer(line):
                target = match.group(1).split("#", 1)[0]
                if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
                    continue  # in-page anchor, URL (http:, mailto:, ...) or site-absolute path
                resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
                if _outside(path, target):
                    found.append(f"{path}:{number}: link {target!r} leaves the repository")
                elif resolved not in present and resolved not in directories:
                    found.append(f"{path}:{number}: link {target!r} -> {resolved!r}: no such file in the repository")
    assert not found, "broken Markdown links:\n" + "\n".join(found)


def test_the_checks_see_the_repository():
    """Guards against a file list that is silently empty."""
    names = {p for p, _ in _files()}
    assert {"README.md", "tempattn/__init__.py", "docs/conf.py"} <= names
