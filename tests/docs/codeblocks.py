"""Finds the code blocks of Markdown documents (the README, docs/*.md) and runs them.

Rules (documented in docs/docs-tests.md):

- A fenced block whose language is ``python`` (or ``py``, ``python3``) is executed. The blocks of
  one document share one namespace, top to bottom, like a notebook.
- A ``pycon`` block (``>>>`` prompts with the output shown) is run as a doctest in that same
  namespace, so the output it shows is checked.
- Any other language (``bash``, ``text``, ``sh``, MyST directives such as ``{toctree}``) is never run.
- ``<!-- docs-test: skip REASON -->`` on the line before a fence (blank lines between are allowed)
  skips that one block; REASON is mandatory and shows in pytest's report. The comment is
  invisible on GitHub and in the Sphinx HTML.
- A runnable block nested inside a MyST directive fence (```` ````{note} ````) would be rendered but
  not collected, so it is an error (reported by ``tests/docs/test_code_blocks.py``); use a ``:::``
  fence for such directives. Inside a plain code block (```` ````markdown ````) a fence is literal text.
"""
import doctest
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]

RUN_LANGUAGES = {"python", "py", "python3"}
DOCTEST_LANGUAGES = {"pycon"}
SKIP_MARKER = "docs-test: skip"

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")
_SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\b\s*(?P<reason>.*?)\s*-->\s*$")
_ANY_MARKER = re.compile(r"<!--\s*docs-test\b")


@dataclass
class Block:
    """One fenced block: ``line`` is the 1-based line of its opening fence."""
    path: Path
    line: int
    language: str
    source: str
    skip_reason: Optional[str] = None

    @property
    def runnable(self) -> bool:
        return self.language in RUN_LANGUAGES or self.language in DOCTEST_LANGUAGES

    @property
    def name(self) -> str:
        return f"{_relative(self.path)}:{self.line}"


@dataclass
class Document:
    path: Path
    blocks: List[Block] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)


def _relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (documents), else as given (the collector's own tests)."""
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def _language(info: str) -> str:
    return info.split()[0].lower() if info.split() else ""


def parse(path: Path) -> Document:
    """The fenced blocks of the Markdown file ``path``, with their skip markers and any problems."""
    doc = Document(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = _relative(path)
    pending_skip = None  # (reason, line) of a skip marker waiting for its fence
    i = 0
    while i < len(lines):
        text = lines[i]
        marker = _SKIP.match(text)
        if marker:
            if not marker.group("reason"):
                doc.problems.append(f"{rel}:{i + 1}: a skip marker needs a reason: <!-- docs-test: skip REASON -->")
            pending_skip = (marker.group("reason"), i + 1)
            i += 1
            continue
        if _ANY_MARKER.search(text):
            doc.problems.append(f"{rel}:{i + 1}: unknown docs-test marker (only `<!-- docs-test: skip REASON -->`)")
        opening = _FENCE.match(text)
        if not opening:
            if text.strip() and pending_skip is not None:
                doc.problems.append(f"{rel}:{pending_skip[1]}: skip marker not followed by a code block")
                pending_skip = None
            i += 1
            continue
        fence, language, start = opening.group("fence"), _language(opening.group("info")), i + 1
        body, i = [], i + 1
        while i < len(lines):
            closing = _FENCE.match(lines[i])
            if closing and closing.group("fence")[0] == fence[0] and len(closing.group("fence")) >= len(fence) \
                    and not closing.group("info"):
                break
            inner = _FENCE.match(lines[i])
            if language.startswith("{") and inner and _language(inner.group("info")) in RUN_LANGUAGES | DOCTEST_LANGUAGES:
                doc.problems.append(f"{rel}:{i + 1}: a {_language(inner.group('info'))} block nested in the "
                                    f"block of line {start} is not collected; move it out of the enclosing block")
            body.append(lines[i][len(opening.group("indent")):] if lines[i].startswith(opening.group("indent"))
                        else lines[i])
            i += 1
        else:
            doc.problems.append(f"{rel}:{start}: code block never closed")
        reason = pending_skip[0] if pending_skip else None
        pending_skip = None
        doc.blocks.append(Block(path, start, language, "\n".join(body) + "\n", reason))
        i += 1
    if pending_skip is not None:
        doc.problems.append(f"{rel}:{pending_skip[1]}: skip marker not followed by a code block")
    return doc


def documents() -> List[Path]:
    """The README and every Markdown page of docs/ (build output excluded)."""
    docs = sorted(p for p in (REPO / "docs").rglob("*.md") if "_build" not in p.relative_to(REPO).parts)
    return [REPO / "README.md", *docs]


class Session:
    """The namespace of one document; runs its blocks in order (earlier ones first, if needed)."""

    def __init__(self, doc: Document):
        self.doc = doc
        self.module = None
        self.next = 0  # index in doc.blocks of the next block to run
        self.failed_at: Optional[Block] = None
        self.reset()

    def reset(self) -> None:
        name = "docs_" + re.sub(r"\W", "_", _relative(self.doc.path))
        self.module = types.ModuleType(name)
        self.module.__file__ = str(self.doc.path)
        sys.modules[name] = self.module  # dataclasses, pickling and inspect look their module up
        self.next, self.failed_at = 0, None

    def run_through(self, block: Block) -> None:
        """Run every runnable, unskipped block before ``block`` that has not run yet, then ``block``."""
        index = self.doc.blocks.index(block)
        if index < self.next:  # asked again (a rerun): start the document over
            self.reset()
        while self.next <= index:
            current = self.doc.blocks[self.next]
            self.next += 1
            if not current.runnable or current.skip_reason is not None:
                continue
            if self.failed_at is not None:
                raise EarlierBlockFailed(self.failed_at)
            try:
                run_block(current, self.module.__dict__)
            except BaseException:
                self.failed_at = current
                if current is block:
                    raise
                raise EarlierBlockFailed(current) from None


class EarlierBlockFailed(Exception):
    def __init__(self, block: Block):
        super().__init__(f"an earlier block of the same document failed: {block.name} (see its own test)")


def run_block(block: Block, namespace: Dict) -> None:
    """Execute one block in ``namespace``; tracebacks point at the document's own line numbers."""
    if block.language in DOCTEST_LANGUAGES:
        _run_doctest(block, namespace)
        return
    padded = "\n" * block.line + block.source  # the first source line is the line after the fence
    exec(compile(padded, str(block.path), "exec"), namespace)


def _run_doctest(block: Block, namespace: Dict) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block.source, namespace, block.name, str(block.path), block.line)
    test.globs = namespace  # share the namespace both ways, as python blocks do
    out: List[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=out.append, clear_globs=False)
    if runner.failures:
        raise AssertionError(f"doctest of {block.name} failed:\n" + "".join(out))
