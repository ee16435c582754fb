"""The spec's example frames (copies of ../shared/spec/examples, so the suite runs on its own)."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).parent / "examples"
SPEC_EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "spec" / "examples"


def example(name: str) -> str:
    """The text of one example file, exactly as stored (no trailing newline)."""
    return (EXAMPLES / name).read_text(encoding="utf-8")


SERVER_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("server-*.json"))
CLIENT_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("client-*.json"))
