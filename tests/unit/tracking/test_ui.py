"""Links into the MLflow UI open the training-runs views, not MLflow 3's GenAI view; the server keeps quiet."""
from research.tracking.ui import compare_url, experiment_url, run_url, ui_command


def test_ui_links_open_the_training_views():
    assert experiment_url("3", 5001) == "http://127.0.0.1:5001/#/experiments/3/runs?workflowType=machine_learning"
    assert run_url("ab", "3") == "http://127.0.0.1:5000/#/experiments/3/runs/ab?workflowType=machine_learning"
    # one experiment: its runs table in the chart view (one chart per metric, the runs' curves overlaid), only these,
    # sorted by val/top1 (sorted by start time, MLflow folds a sweep's trials under their parent and draws it alone)
    assert compare_url(["ab", "cd"], ["3", "3"]) == (
        "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning&compareRunsMode=CHART"
        "&orderByKey=metrics.%60val%2Ftop1%60&orderByAsc=false&searchFilter=attributes.run_id%20IN%20('ab','cd')")
    assert compare_url(["ab", "cd"], ["3", "4"]) == \
        'http://127.0.0.1:5000/#/compare-runs?runs=["ab","cd"]&experiments=["3","4"]&workflowType=machine_learning'


def test_the_printed_server_command_has_no_access_log():
    assert ui_command(5002).endswith("--port 5002 --workers 1 --uvicorn-opts=--no-access-log")
