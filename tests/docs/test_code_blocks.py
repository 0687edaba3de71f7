"""Every code block of the README and of docs/ runs (rules: tests/docs/codeblocks.py, docs/docs-tests.md).

One test per runnable block, named ``<file>:<line of its fence>``; the blocks of one document share
a namespace, so a test first runs the document's earlier blocks if they have not run yet.
"""
import re

import pytest

from . import codeblocks

DOCUMENTS = {path: codeblocks.parse(path) for path in codeblocks.documents()}
SESSIONS = {}


def _params():
    params = []
    for doc in DOCUMENTS.values():
        for block in doc.blocks:
            if not block.runnable:
                continue
            marks = [pytest.mark.skip(reason=block.skip_reason)] if block.skip_reason is not None else []
            params.append(pytest.param(block, id=block.name, marks=marks))
    return params


def test_documents_are_well_formed():
    """Markers have reasons and precede a block; no runnable block hides inside another fence."""
    problems = [p for doc in DOCUMENTS.values() for p in doc.problems]
    assert not problems, "\n".join(problems)


def test_docs_have_runnable_blocks():
    """The collector finds the README's and the docs' python blocks (guards against a parser that finds none)."""
    readme = DOCUMENTS[codeblocks.REPO / "README.md"]
    assert any(b.language in codeblocks.RUN_LANGUAGES for b in readme.blocks)
    assert sum(b.runnable for doc in DOCUMENTS.values() for b in doc.blocks) >= 20


def test_rst_pages_hold_no_code_blocks():
    """The collector reads Markdown; reST pages (the API reference) must not hide untested examples."""
    literal = re.compile(r"^\s*\.\. (code-block|code|sourcecode|doctest|testcode|literalinclude)::"
                         r"|^(?!\s*\.\. ).*\S::\s*$|^\s*::\s*$|^\s*>>>", re.MULTILINE)
    offenders = [str(p.relative_to(codeblocks.REPO)) for p in (codeblocks.REPO / "docs").rglob("*.rst")
                 if "_build" not in p.parts and literal.search(p.read_text(encoding="utf-8"))]
    assert not offenders, f"code blocks in reST pages are not collected; write them in Markdown: {offenders}"


@pytest.mark.parametrize("block", _params())
def test_code_block(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    session = SESSIONS.get(block.path)
    if session is None:
        session = SESSIONS[block.path] = codeblocks.Session(DOCUMENTS[block.path])
    session.run_through(block)
