"""notebooks/eval.ipynb runs from a clean kernel without errors and shows pictures."""

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "eval.ipynb"
KERNEL = "python3"


def kernel_available() -> bool:
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:
        return False
    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        return False
    return True


def test_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.timeout(180)
def test_eval_notebook_runs(tmp_path, monkeypatch):
    if not kernel_available():
        pytest.skip(f"no Jupyter kernel {KERNEL!r} (python -m ipykernel install --user)")
    monkeypatch.delenv("SLOTLAB_MODEL", raising=False)  # the default model choice
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name=KERNEL, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # matplotlib slots, slot figure, set-prediction figure
    assert list(tmp_path.iterdir()) == []  # writes nothing
