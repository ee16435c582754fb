"""The protocol layer is sans-I/O: no asyncio, no websockets, no Rx, and no reach into the rest."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import rx_spacetimedb
import rx_spacetimedb.protocol

PROTOCOL_DIR = Path(rx_spacetimedb.protocol.__file__).parent
PACKAGE_DIR = Path(rx_spacetimedb.__file__).parent
FORBIDDEN = ("asyncio", "websockets", "reactivex", "threading", "socket", "selectors", "concurrent")

# Runs in a fresh interpreter; prints the forbidden modules that got imported.
_PROBE = """
import json, sys, types
if {stub_package}:
    # load rx_spacetimedb.protocol without running rx_spacetimedb/__init__.py
    package = types.ModuleType("rx_spacetimedb")
    package.__path__ = [{package_dir!r}]
    sys.modules["rx_spacetimedb"] = package
import rx_spacetimedb.protocol
rx_spacetimedb.protocol.decode_server_message('{{"IdentityToken":{{"identity":{{"__identity__":"0x1"}},'
                                              '"token":"t","connection_id":{{"__connection_id__":1}}}}}}')
forbidden = {forbidden!r}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in forbidden)))
"""


def _imported_in_fresh_interpreter(stub_package: bool) -> list[str]:
    code = _PROBE.format(stub_package=stub_package, package_dir=str(PACKAGE_DIR), forbidden=FORBIDDEN)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            timeout=60)
    found: list[str] = json.loads(result.stdout)
    return found


def test_protocol_modules_import_no_io_or_rx() -> None:
    assert _imported_in_fresh_interpreter(stub_package=True) == []


def test_importing_rx_spacetimedb_protocol_imports_no_io_or_rx() -> None:
    assert _imported_in_fresh_interpreter(stub_package=False) == []


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            names.append(node.module or "")
    return names


def test_protocol_imports_only_itself_errors_stdlib_and_orjson() -> None:
    files = sorted(PROTOCOL_DIR.glob("*.py"))
    assert {f.name for f in files} >= {"codec.py", "messages.py", "values.py", "types.py", "sats.py",
                                       "schema.py", "jsontext.py", "__init__.py"}
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "rx_spacetimedb":
                assert name == "rx_spacetimedb.errors" or name.startswith("rx_spacetimedb.protocol"), \
                    f"{path.name} imports {name}"
            else:
                assert top == "orjson" or top in sys.stdlib_module_names, f"{path.name} imports {name}"
                assert top not in FORBIDDEN, f"{path.name} imports {name}"
