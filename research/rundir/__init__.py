"""The run directory, owned here alone: its file names (files.py), the lock of its one owner and --fresh
(lock.py), status.json (status.py: one record, one reader, one writer, whether the run is alive), run.json
(run_json.py), the keep-alive supervisor's record (supervision.py), console.log's last error (console.py) and
settling a run whose process died (settle.py). No mxnet and no mlflow on import: tools/status.py reads these."""
