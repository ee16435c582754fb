"""notebooks/live_players.ipynb runs top to bottom, headless, without errors (as CI runs it)."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "live_players.ipynb"


def _outputs(cell: Any) -> list[dict[str, Any]]:
    return [dict(output) for output in cell.get("outputs", [])]


def test_the_committed_notebook_has_no_outputs() -> None:
    """Outputs are stripped before committing, so diffs stay readable and nothing stale ships."""
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def _kernel_for_this_python(home: Path) -> str:
    """A kernelspec running this interpreter, so the kernel imports the rx_spacetimedb under test.

    A ``python3`` kernelspec installed elsewhere on the machine may point at another Python.
    """
    spec = home / "kernels" / "rx-spacetimedb-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps(
        {"argv": argv, "display_name": "rx_spacetimedb tests", "language": "python"}), encoding="utf-8")
    return spec.name


def test_the_notebook_runs_headless_without_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # no path-migration DeprecationWarning
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    kernel = _kernel_for_this_python(tmp_path / "jupyter")
    extra = "pip install 'rx_spacetimedb[notebook]'"
    nbformat = pytest.importorskip("nbformat", reason=f"running the notebook needs nbformat: {extra}")
    nbclient = pytest.importorskip("nbclient", reason=f"running the notebook needs nbclient: {extra}")
    pytest.importorskip("ipykernel", reason=f"running the notebook needs ipykernel: {extra}")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=60, kernel_name=kernel,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell if any cell fails

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in _outputs(cell)]
    assert not [o for o in outputs if o["output_type"] == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    # The live table's display was redrawn in place: it ends with the final players, carol gone.
    table = next(h for h in html if "<caption>Player" in h)
    assert "<td>alice</td>" in table and "<td>bob</td>" in table and "<td>carol</td>" not in table
    pictures = [o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) == 1 and base64.b64decode(pictures[0]).startswith(b"\x89PNG")
    text = "".join(o.get("text", "") for o in outputs)
    assert 'failed as expected: reducer \'CreatePlayer\' failed: name "alice" is already taken' in text
    assert "closed" in text
