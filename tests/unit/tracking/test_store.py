"""The store's URI as files and messages show it: credentials stay in the environment."""
from __future__ import annotations

import json

import pytest

from research.tracking.store import public_uri, with_credentials
from research.rundir.run_json import read_run_json, write_run_json


@pytest.mark.parametrize("uri, shown", [
    ("http://bob:pw-S3CRET@tracker.lab:5000/", "http://tracker.lab:5000/"),
    ("https://token-S3CRET@tracker.lab/mlflow", "https://tracker.lab/mlflow"),
    ("postgresql://mlflow:pw-S3CRET@db.lab:5432/mlflow?sslmode=require", "postgresql://db.lab:5432/mlflow?sslmode=require"),
    ("postgresql://db.lab/mlflow?password=pw-S3CRET&sslmode=require", "postgresql://db.lab/mlflow?sslmode=require"),
    ("https://tracker.lab/?token=T0KEN&sig=S1G&user_key=K", "https://tracker.lab/"),
    ("sqlite:////home/me/research/mlruns/mlflow.db", "sqlite:////home/me/research/mlruns/mlflow.db"),
    ("databricks://profile", "databricks://profile"), ("./mlruns", "./mlruns"),
])
def test_public_uri_drops_user_password_and_secret_parameters(uri, shown):
    assert public_uri(uri) == shown


def test_run_json_holds_no_credentials_and_the_environment_gives_them_back(tmp_path, monkeypatch):
    """run.json is 0644 and travels with the run directory; the password stays in the user's environment."""
    secret = "http://bob:pw-S3CRET@tracker.lab:5000/"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", secret)
    write_run_json(tmp_path, "r1", "0")
    assert "S3CRET" not in (tmp_path / "run.json").read_text()
    stored = read_run_json(tmp_path).tracking_uri
    assert stored == "http://tracker.lab:5000/" and with_credentials(stored) == secret
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:other@elsewhere:5000/")    # another store: not its password
    assert with_credentials(stored) == stored
    assert json.loads((tmp_path / "run.json").read_text())["run_id"] == "r1"
