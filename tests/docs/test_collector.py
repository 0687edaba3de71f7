"""The code-block collector itself: what it runs, skips and rejects (rules in tests/docs/codeblocks.py)."""
import pytest

from . import codeblocks

DOC = '''# A page

```python
x = 1
```

Text.

<!-- docs-test: skip needs a GPU -->

```python
raise SystemExit("never run")
```

```pycon
>>> x + 1
2
```

```bash
exit 1
```

````markdown
```python
raise SystemExit("literal text inside a Markdown example")
```
````

:::{note}
```python
y = x * 10
```
:::
'''


def _parse(tmp_path, text):
    path = tmp_path / "page.md"
    path.write_text(text, encoding="utf-8")
    return codeblocks.parse(path)


def test_blocks_languages_and_skips(tmp_path):
    doc = _parse(tmp_path, DOC)
    assert not doc.problems
    assert [(b.language, b.runnable, b.skip_reason) for b in doc.blocks] == [
        ("python", True, None), ("python", True, "needs a GPU"), ("pycon", True, None), ("bash", False, None),
        ("markdown", False, None), ("python", True, None)]
    assert [b.line for b in doc.blocks] == [3, 11, 15, 20, 24, 31]


def test_session_runs_in_order_shares_namespace_and_doctests(tmp_path):
    doc = _parse(tmp_path, DOC)
    session = codeblocks.Session(doc)
    session.run_through(doc.blocks[-1])             # runs blocks 0 and 2 (doctest) first, skips 1 and 3
    assert session.module.y == 10


def test_failing_doctest_and_earlier_failure(tmp_path):
    doc = _parse(tmp_path, "```python\nx = 1\n```\n\n```pycon\n>>> x\n2\n```\n\n```python\nz = x\n```\n")
    session = codeblocks.Session(doc)
    with pytest.raises(AssertionError, match="doctest"):
        session.run_through(doc.blocks[1])
    with pytest.raises(codeblocks.EarlierBlockFailed):
        session.run_through(doc.blocks[2])


def test_traceback_points_at_the_document_line(tmp_path):
    doc = _parse(tmp_path, "# t\n\n```python\nx = 1\nraise ValueError('here')\n```\n")
    with pytest.raises(ValueError) as info:
        codeblocks.Session(doc).run_through(doc.blocks[0])
    assert info.traceback[-1].lineno + 1 == 5       # pytest's lineno is 0-based


@pytest.mark.parametrize("text, problem", [
    ("<!-- docs-test: skip -->\n```python\nx = 1\n```\n", "needs a reason"),
    ("<!-- docs-test: skip later -->\n\nsome text\n", "not followed by a code block"),
    ("<!-- docs-test: run-twice -->\n```python\nx = 1\n```\n", "unknown docs-test marker"),
    ("````{note}\n```python\nx = 1\n```\n````\n", "is not collected"),
    ("```python\nx = 1\n", "never closed"),
])
def test_problems_are_reported(tmp_path, text, problem):
    assert any(problem in p for p in _parse(tmp_path, text).problems)
