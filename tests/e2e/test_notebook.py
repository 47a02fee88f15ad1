"""notebooks/lenet_digits.ipynb executed top to bottom in a real Jupyter kernel, as a user runs it.

The kernel sees no user Jupyter or IPython configuration, a temporary MLflow store and temporary
run directories; a cell injected after the notebook's `parameters` cell shortens the two runs.
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, make_env

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = REPO / "notebooks" / "lenet_digits.ipynb"
EPOCHS = 4


def isolated_kernel(tmp: Path, monkeypatch: pytest.MonkeyPatch, store: Path) -> str:
    """A kernelspec for this interpreter in a private Jupyter path; the kernel's environment."""
    spec_dir = tmp / "jupyter" / "kernels" / "research-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "research test", "language": "python"}))
    for name, value in {**make_env(store), "JUPYTER_PATH": str(tmp / "jupyter"),
                        "JUPYTER_DATA_DIR": str(tmp / "jupyter"), "JUPYTER_CONFIG_DIR": str(tmp / "config"),
                        "IPYTHONDIR": str(tmp / "ipython"), "PYTHONPATH": str(REPO),   # this checkout's research
                        "MPLBACKEND": "module://matplotlib_inline.backend_inline"}.items():
        monkeypatch.setenv(name, value)
    return "research-test"


def outputs(cell) -> tuple[str, set[str]]:
    """A cell's printed text (stdout, stderr, text/plain results) and the MIME types it displayed."""
    text, kinds = [], set()
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            text.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            kinds.update(out["data"])
            text.append(out["data"].get("text/plain", ""))
    return "".join(text), kinds


def test_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch, store):
    kernel = isolated_kernel(tmp_path, monkeypatch, store)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (index,) = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(
        f"RUNS = Path({str(tmp_path / 'runs')!r})\nOVERRIDES = {{'train.epochs': {EPOCHS}}}"))

    nbclient.NotebookClient(notebook, timeout=600, kernel_name=kernel,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()

    nbformat.write(notebook, tmp_path / "executed.ipynb")     # to read when an assertion fails
    cells = [outputs(cell) for cell in notebook.cells if cell.cell_type == "code"]
    text = "\n".join(t for t, _ in cells)
    top1 = [float(v) for v in re.findall(rf"val top-1 (\d\.\d+) after {EPOCHS} epochs", text)]
    assert top1 and top1[0] > 0.9, text[-3000:]                    # chance is 0.1
    trained = next(kinds for out, kinds in cells if "val top-1" in out)
    assert "application/vnd.jupyter.widget-view+json" in trained, "tqdm.auto draws a widget per epoch"
    assert any("Invert it" in out for out, _ in cells), "the inverted digit's warning shows under its cell"
    figures = [kinds for _, kinds in cells if "image/png" in kinds]
    assert len(figures) >= 2, "the curves and the predicted digits should show inline"
    compared = cells[-1][0]
    assert "train.lr" in compared and "0.05" in compared          # the table names what differs
    for name in ("lenet_digits", "lenet_digits-lr0.05"):
        assert (tmp_path / "runs" / name / "model").is_dir(), name
    assert not (REPO / "notebooks" / "runs").exists()


@pytest.mark.slow
def test_interrupting_the_kernel_checkpoints_and_the_cell_resumes(tmp_path, monkeypatch, store):
    """Jupyter's interrupt button during research.train, then the same cell run again."""
    from jupyter_client.manager import start_new_kernel

    kernel = isolated_kernel(tmp_path, monkeypatch, store)
    run_dir = tmp_path / "run"
    cell = (f"import research\nrun = research.train({str(REPO / 'recipes/smoke/lenet_digits_tiny.yaml')!r}, "
            f"output={str(run_dir)!r}, overrides={{'train.epochs': 2, 'train.lr_steps': []}})")
    manager, client = start_new_kernel(kernel_name=kernel, cwd=str(tmp_path))
    try:
        # stop_on_error=False: the kernel would otherwise abort a request that follows the error within
        # its abort window; a user who clicks Run again is slower than that, this test is not.
        msg_id, deadline = client.execute(cell, stop_on_error=False), time.monotonic() + 300
        while not list((run_dir / "checkpoints").glob("step-*.ckpt")):   # an epoch is done and saved
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        manager.interrupt_kernel()
        reply = client.get_shell_msg(timeout=120)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = client.get_shell_msg(timeout=120)
        assert reply["content"]["ename"] == "KeyboardInterrupt", reply["content"]
        assert "call research.train again" in reply["content"]["evalue"]
        assert json.loads((run_dir / "status.json").read_text())["status"] == "killed"

        reply = client.execute_interactive(cell + "\nprint(run.status, run.run_id, len(run.history))",
                                           timeout=300, output_hook=lambda msg: None)
        assert reply["content"]["status"] == "ok", reply["content"]
        reply = client.execute_interactive("import signal; assert signal.getsignal(signal.SIGINT) is "
                                           "signal.default_int_handler", timeout=60, output_hook=lambda msg: None)
        assert reply["content"]["status"] == "ok", "the kernel's own interrupt handling is back"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)

    from mlflow.tracking import MlflowClient
    mlflow = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    (only,) = mlflow.search_runs([mlflow.get_experiment_by_name("lenet_digits_tiny").experiment_id])
    assert only.info.status == "FINISHED"
    assert sorted(m.step for m in mlflow.get_metric_history(only.info.run_id, "val/top1")) == [1, 2]
