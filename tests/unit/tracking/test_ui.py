"""Links into the MLflow UI open the training-runs views, not MLflow 3's GenAI view."""
from research.tracking.ui import compare_url, experiment_url


def test_ui_links_open_the_training_views():
    assert experiment_url("3", 5001) == "http://127.0.0.1:5001/#/experiments/3/runs?workflowType=machine_learning"
    assert compare_url(["ab", "cd"], ["3", "3"]) == \
        'http://127.0.0.1:5000/#/compare-runs?runs=["ab","cd"]&experiments=["3"]'
