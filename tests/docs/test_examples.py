"""Every script in examples/ runs to completion, and the docs show every one of them.

Each example runs as a user would run it, ``python examples/NAME.py``, in a fresh process with
the checkout first on ``sys.path`` and one intra-op thread (``OMP_NUM_THREADS=1`` unless already
set: on a small shared CI machine an oversubscribed thread pool only adds waiting). Each is sized
to finish in well under 15 seconds; the timeout below only catches a hang.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.py"))
HANG_TIMEOUT_S = 300


def test_examples_exist():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=HANG_TIMEOUT_S)
    assert result.returncode == 0, (f"{script.name} exited with {result.returncode}\n--- stdout\n{result.stdout}"
                                    f"\n--- stderr\n{result.stderr}")


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_documented(script):
    """docs/examples.md includes each script (so the docs show exactly the code that CI runs)."""
    page = (REPO / "docs" / "examples.md").read_text(encoding="utf-8")
    assert f"../examples/{script.name}" in page, f"add {script.name} to docs/examples.md (a literalinclude)"


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_has_a_docstring(script):
    """The module docstring says what the example shows and how to run it."""
    source = script.read_text(encoding="utf-8")
    assert source.startswith('"""') and f"python examples/{script.name}" in source.split('"""')[1]
