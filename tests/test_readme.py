"""The README's Python snippets run, in order, as a newcomer would paste them."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"(<!-- skip[^>]*-->\s*)?```python\n(.*?)```", re.S)


def snippets() -> list[str]:
    """Python blocks of the README, except those marked ``<!-- skip: reason -->``."""
    return [code for skip, code in _BLOCK.findall(README.read_text(encoding="utf-8")) if not skip]


def test_the_readme_has_runnable_snippets() -> None:
    assert len(snippets()) >= 6


def test_readme_snippets_run_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    try:
        for index, code in enumerate(snippets()):
            exec(compile(code, f"README.md[python block {index}]", "exec", dont_inherit=True), namespace)
    finally:
        with contextlib.suppress(Exception):
            namespace["conn"].close()
        with contextlib.suppress(Exception):
            namespace["server"].stop()
    out = capsys.readouterr().out
    assert "Committed(" in out
    assert "alice" in out
    assert "name \"alice\" is already taken" in out
    assert "up" in out
    # The card's spelling on the live connection, subscribed after the snapshot: an update.
    assert "transaction [] [(1200, 1300)]" in out
    assert "SetScore SetScoreArgs(id=1, score=1300) committed" in out
    assert "inserted ['erin']" in out  # async for over aio.iterate
    assert "closed" in out


def test_readme_commands_match_ci() -> None:
    text = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    setup = re.search(r"## Set-up\n\n```bash\n(.*?)```", text, re.S)
    assert setup is not None
    lines = setup.group(1).splitlines()
    test_command = next(line.split("#")[0].strip() for line in lines if "pytest" in line)
    assert test_command in ci
    assert any(line.startswith("python -m rx_spacetimedb demo") for line in lines)
