"""Imports point down the layers: protocol < I/O < cache/operators < connection < edges."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rx_spacetimedb"

# Lower numbers are lower layers; a module may import only modules of its layer or below.
LAYERS: dict[str, int] = {
    "errors": 0,
    "protocol": 1,
    "types": 1,
    "_redact": 1,
    "_rows": 2,
    "_subscriptions": 2,
    "_resync": 2,
    "_streams": 2,
    "_ioloop": 2,
    "_options": 3,
    "transport": 2,
    "requests": 2,
    "credentials": 2,
    "schema_fetch": 2,
    "cache": 3,
    "delivery": 3,
    "operators": 3,
    "aio": 4,
    "testing": 3,
    "qt": 3,
    "session": 3,
    "connection": 4,
    "handler": 4,
    "__init__": 6,
    "notebook": 6,
    "cli": 6,
    "__main__": 6,
}


def layer_of(module: str) -> int:
    """The layer of ``rx_spacetimedb.<first part>``."""
    head = module.split(".")[0]
    if head not in LAYERS:
        raise AssertionError(f"rx_spacetimedb.{head} has no layer in tests/test_layers.py: add it")
    return LAYERS[head]


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rx_spacetimedb"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("rx_spacetimedb")]
    return [name.removeprefix("rx_spacetimedb").lstrip(".") or "__init__" for name in found]


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    own = path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
    own_layer = layer_of(own)
    for target in imports(path):
        if target.split(".")[0] == own.split(".")[0]:
            continue  # inside one package (protocol/, operators/, testing/)
        assert layer_of(target) <= own_layer, f"rx_spacetimedb.{own} imports rx_spacetimedb.{target}"


def test_the_emulator_does_not_use_the_client() -> None:
    """The emulator shares only protocol/ with the client, so a shared bug cannot hide (ARCHITECTURE)."""
    for path in (PACKAGE / "testing").rglob("*.py"):
        for target in imports(path):
            head = target.split(".")[0]
            assert head in {"errors", "protocol", "testing", "_redact"}, f"{path.name} imports {target}"
