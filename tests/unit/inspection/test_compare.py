"""research.inspection.compare against a real temporary MLflow store filled through research.tracking."""
from __future__ import annotations

import csv
import io
import json

import pytest

from research.inspection.compare import collect, differing_params, format_rows, plot_runs
from research.errors import UserError
from research.tracking import Tracker, get_client

PARAMS = {"net.name": "lenet", "train.epochs": "3", "train.batch_size": "32"}


def make_run(experiment: str, lr: str, top1: list[float], finish: bool = True, extra: dict | None = None,
             relogged: dict[int, float] | None = None) -> str:
    tracker = Tracker.start(experiment, f"{experiment} run lr={lr}",
                            tags={"recipe": experiment, "contexts": "cpu(0),cpu(1)", "run_dir": f"/data/runs/{lr}"})
    tracker.log_params({**PARAMS, "train.lr": lr, **(extra or {})})
    for epoch, value in enumerate(top1, 1):
        tracker.log_metrics({"val/top1": value, "val/top5": min(1.0, value + 0.1), "train/loss": 2.0 / epoch,
                             "speed/img_per_s": 1000.0 * epoch}, step=epoch)
    for epoch, value in (relogged or {}).items():     # a resumed run logs an epoch again
        tracker.log_metrics({"val/top1": value}, step=epoch)
    if finish:
        tracker.end("FINISHED")
    else:
        tracker.flush()
    return tracker.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two runs of exp_a (lr 0.05 finished, lr 0.1 still running), one of exp_b."""
    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        ids = {"a1": make_run("exp_a", "0.05", [0.5, 0.9, 0.8], relogged={3: 0.85}),
               "a2": make_run("exp_a", "0.1", [0.3, 0.6], finish=False, extra={"data.size": "32"}),
               "b1": make_run("exp_b", "0.05", [0.4])}
        yield root, ids


@pytest.fixture
def uri(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store[0] / 'mlflow.db'}")
    return store[1]


def test_rows_summarise_each_run(uri):
    rows = collect("exp_a")
    assert [r.run_id for r in rows] == [uri["a1"], uri["a2"]]          # oldest first
    done, running = rows
    assert (done.status, running.status) == ("FINISHED", "RUNNING")
    assert (done.epochs_done, done.epochs_planned, running.epochs_done) == (3, 3, 2)
    assert (done.best_epoch, done.best_top1, done.best_top5) == (2, 0.9, 1.0)
    assert done.final_top1 == 0.85                                      # the re-logged value wins
    assert done.img_per_s == 2000.0 and done.devices == "cpu(0),cpu(1)" and done.recipe == "exp_a"
    assert done.run_dir == "/data/runs/0.05" and "/data/runs/0.05" in format_rows(rows)    # the output column
    info = get_client().get_run(uri["a1"]).info                         # the wall column is start to end
    assert info.end_time > info.start_time and done.wall_s == pytest.approx((info.end_time - info.start_time) / 1000)
    assert done.curves["train/loss"] == [(1, 2.0), (2, 1.0), (3, 2.0 / 3)]


def test_differing_values_include_keys_only_one_run_has(uri):
    rows = collect("exp_a")
    assert differing_params(rows) == ["data.size", "train.lr"]
    assert differing_params(rows[:1]) == []


def test_csv_has_a_row_per_run_with_the_differing_values(uri):
    rows = collect("exp_a")
    table = list(csv.DictReader(io.StringIO(format_rows(rows, "csv"))))
    assert [(r["run_id"], r["train.lr"], r["data.size"]) for r in table] == [(uri["a1"], "0.05", ""),
                                                                              (uri["a2"], "0.1", "32")]
    assert float(table[0]["best_val_top1"]) == 0.9 and table[0]["best_epoch"] == "2"


def test_text_and_markdown_show_names_and_values(uri):
    rows = collect("exp_a")
    text = format_rows(rows, "text")
    assert "exp_a run lr=0.05" in text and "90.00%" in text and "3/3" in text
    assert "train.lr" in text.split("differ")[1] and "0.1" in text.split("differ")[1]
    markdown = format_rows(rows, "markdown").splitlines()
    assert markdown[0].startswith("| run | name |") and markdown[1].startswith("| --- |")
    assert "one run" in format_rows(rows[:1], "text")


def test_runs_by_prefix_and_run_directory(uri, tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"run_id": uri["b1"], "experiment_id": "2"}))
    rows = collect(run_ids=[uri["a2"][:8], str(tmp_path)])
    assert [r.run_id for r in rows] == [uri["a2"], uri["b1"]]          # in the order asked
    with pytest.raises(UserError, match="--runs ffff0000: no run"):
        collect(run_ids=["ffff0000"])
    with pytest.raises(UserError, match="not a run id"):
        collect(run_ids=["nothing-here"])


def test_unknown_experiment_lists_the_experiments(uri):
    with pytest.raises(UserError, match=r"no experiment 'exp_c'.*exp_a, exp_b"):
        collect("exp_c")
    with pytest.raises(UserError, match=r"--experiment NAME.*exp_a, exp_b"):   # two to choose from
        collect()
    assert [r.run_id for r in collect("exp_a", last=1)] == [uri["a2"]]


def test_missing_store_is_an_error_and_stays_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}")
    with pytest.raises(UserError, match="no MLflow store"):
        collect("exp_a")
    assert not (tmp_path / "none").exists()


def test_plot_is_a_png_matplotlib_reads(uri, tmp_path):
    import matplotlib.image

    plot_runs(collect("exp_a"), tmp_path / "runs.png")
    data = (tmp_path / "runs.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(tmp_path / "runs.png").shape
    assert height > 100 and width > 100
    with pytest.raises(UserError, match="does not exist"):
        plot_runs(collect("exp_a"), tmp_path / "no" / "runs.png")


def test_library_compare_is_the_csv_table_as_a_dataframe(uri):
    import research
    table = research.compare("exp_a")
    expected = list(csv.reader(io.StringIO(format_rows(collect("exp_a"), "csv"))))
    assert list(table.columns) == expected[0] and "data.size" in table.columns     # the differing value
    wall = expected[0].index("wall_s")            # a running run's wall time grows between the two calls
    cells = [[("" if v is None or v != v else str(v)) for i, v in enumerate(row) if i != wall]
             for row in table.values.tolist()]
    assert cells == [[v for i, v in enumerate(row) if i != wall] for row in expected[1:]]
    assert list(research.compare([uri["b1"], uri["a1"][:8]])["run_id"]) == [uri["b1"], uri["a1"]]
    with pytest.raises(UserError, match="no experiment 'nope'"):
        research.compare("nope")


def test_the_text_table_fits_the_terminal_and_prints_values_as_set_takes_them(uri):
    rows = collect("exp_a")
    rows[0].name = "lr=0.05 warmup_epochs=1 momentum=0.9 a name longer than a terminal line allows"
    rows[0].run_dir = "/data/runs/lenet_digits-sweep-lr-warmup_epochs/lr-0.05_warmup_epochs-1"
    for width in (100, 80):
        text = format_rows(rows, "text", width=width)
        assert max(len(line) for line in text.splitlines() if "/data/runs/" not in line) <= width, text
        assert "Run directories:" in text and rows[0].run_dir in text          # moved under the table, whole
    assert "recipe exp_a" in format_rows(rows, "text").splitlines()[0]       # what every run shares: said once
    rows[1].params["train.warmup_epochs"] = "1.0"                            # MLflow's text of a float recipe key
    assert "1.0" not in format_rows(rows, "text").split("differ")[1].replace("0.1", "")


def test_a_sweep_folder_or_parent_run_stands_for_its_trials(uri, tmp_path):
    parent = Tracker.start("exp_s", "sweep lr", tags={"sweep": "parent"})
    trials = [Tracker.start("exp_s", f"lr={lr}", tags={"mlflow.parentRunId": parent.run_id, "recipe": "exp_s"})
              for lr in ("0.1", "0.2")]
    for trial in trials:
        trial.log_metrics({"val/top1": 0.5}, step=1)
        trial.end("FINISHED")
    parent.end("FINISHED")
    (tmp_path / "status.json").write_text(json.dumps({"status": "finished", "kind": "sweep", "run_id": parent.run_id}))
    expected = [t.run_id for t in trials]
    assert [r.run_id for r in collect(run_ids=[str(tmp_path)])] == expected
    assert [r.run_id for r in collect(run_ids=[parent.run_id[:8]])] == expected
    (tmp_path / "status.json").unlink()
    with pytest.raises(UserError, match="sweep folder"):
        collect(run_ids=[str(tmp_path)])
