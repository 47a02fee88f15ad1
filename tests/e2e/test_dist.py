"""tools/launch_dist.py on loopback: a scheduler, a server and 2 CPU workers train the dist smoke recipe.

The reference for "same as one process with the global batch" is one process with 2 contexts whose
context i sees worker i's shard, batch by batch: the same samples per step, the same sums.
"""
from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import mxnet as mx
import numpy as np
import psutil
import pytest
from helpers import PYTHON, REPO, make_env, patched_tool
from mlflow.tracking import MlflowClient

from research.config import load_recipe
from research.data import get_iterators
from research.dist.workers import digest_arrays
from research.training import checkpoint
from research.training.lifecycle import Lifecycle
from research.training.loop import fit
from research.training.signals import StopRequest
from research.training.job import build_setup

RECIPE = "recipes/smoke/lenet_digits_dist.yaml"
STEPS_PER_EPOCH = (1437 // 2) // 16           # each worker: half the 1,437 digits, 16 per batch
pytestmark = pytest.mark.slow


class Job:
    """tools/launch_dist.py as a user runs it; output collected; everything it started is ended in close()."""

    def __init__(self, tmp_path: Path, store: Path, *extra: str, per_worker: str = "", patch: str = ""):
        """`per_worker`: shell words appended to each worker's command; $SLOT tells the workers apart.
        `patch`: Python run in each worker's process before tools/train.py (helpers.patched_tool)."""
        (tmp_path / "hosts").write_text("localhost\nlocalhost\n")
        self.runs = tmp_path / "runs"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        train = "tools/train.py"
        if patch:
            train = tmp_path / "patched_train.py"
            train.write_text(patched_tool("train.py", patch))
        command = [PYTHON, str(train), RECIPE, "--output", str(self.runs / "shared"), *extra]
        if per_worker:      # the launcher gives each node PORT = scheduler port + its slot
            command = ["bash", "-c", f"SLOT=$((PORT - DMLC_PS_ROOT_PORT)); exec {shlex.join(command)} {per_worker}"]
        self.proc = subprocess.Popen(
            [PYTHON, "tools/launch_dist.py", "--hosts", str(tmp_path / "hosts"), "--port", str(port),
             "--timeout", "120", "--", *command],
            cwd=REPO, env=make_env(store, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        self.lines: list[str] = []
        self.family: set[psutil.Process] = set()
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()

    @property
    def run_dir(self) -> Path:
        """Rank 0's run directory: the one with a status.json."""
        found = {path.parent for path in self.runs.glob("*/status.json")}
        assert len(found) == 1, found
        return found.pop()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 180) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            self._note_family()
            match = re.search(pattern, self.output)
            if match:
                return match
            assert self.proc.poll() is None, f"launcher exited {self.proc.returncode} first:\n{self.output}"
            assert time.monotonic() < deadline, f"no {pattern!r} within {timeout} s:\n{self.output}"
            time.sleep(0.1)

    def wait(self, timeout: float = 300) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._note_family()
            time.sleep(0.1)
        return self.proc.wait(timeout=1)

    def _note_family(self) -> None:
        try:
            self.family.update(psutil.Process(self.proc.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass

    def digests(self, when: str = "final weights") -> dict[int, str]:
        """Each worker's weights digest, by rank: `when` is "final weights" or "weights" (at the start)."""
        return {int(rank): digest for rank, digest in re.findall(rf"\[rank(\d)\] .* {when} sha256 (\w+)",
                                                                 self.output)}

    def close(self) -> None:
        """Leave no MXNet process behind: they would wait for their peers forever."""
        self._note_family()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for process in self.family:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(list(self.family), timeout=10)

    def left_running(self) -> list[psutil.Process]:
        return [p for p in self.family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One MLflow store for the module (creating one costs ~10 s here); each test has its own experiment."""
    return tmp_path_factory.mktemp("mlruns")


@pytest.fixture
def job_factory(tmp_path, store, request):
    jobs = []

    def start(*extra: str, **kwargs) -> Job:
        jobs.append(Job(tmp_path, store, "--set", f"tracking.experiment={request.node.name}", *extra, **kwargs))
        return jobs[-1]
    yield start
    for job in jobs:
        job.close()


class ShardsIter(mx.io.DataIter):
    """Batch i = worker 0's batch i followed by worker 1's: split over 2 contexts, each gets one worker's."""

    def __init__(self, parts: list):
        super().__init__(sum(part.batch_size for part in parts))
        self.parts = parts
        self.num_samples = sum(part.num_samples for part in parts)

    @property
    def provide_data(self):
        return [mx.io.DataDesc("data", (self.batch_size,) + self.parts[0].provide_data[0].shape[1:])]

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts:
            part.set_epoch(epoch)

    def reset(self) -> None:
        for part in self.parts:
            part.reset()

    def next(self) -> mx.io.DataBatch:
        batches = [part.next() for part in self.parts]
        return mx.io.DataBatch(data=[mx.nd.concat(*[b.data[0] for b in batches], dim=0)],
                               label=[mx.nd.concat(*[b.label[0] for b in batches], dim=0)], pad=0)


def one_process_reference(tmp_path: Path, resume_from: dict | None = None) -> dict[str, np.ndarray]:
    """One process, 2 contexts, global batch 32; optionally resumed from a checkpoint without optimizer state."""
    recipe = load_recipe(REPO / RECIPE, ["train.kvstore=device"])
    setup = build_setup(recipe, [mx.cpu(0), mx.cpu(1)], tmp_path, "device")
    setup.train_iter = ShardsIter([get_iterators(recipe, 16, num_parts=2, part_index=i)[0] for i in range(2)])
    state = checkpoint.TrainState(recipe=recipe.to_dict())
    if resume_from is not None:
        assert resume_from["optimizer"] is None          # the servers held the momentum: restarts from zero
        state = checkpoint.restore(resume_from, setup.net, setup.trainer)
    assert fit(setup, state, Lifecycle(setup.run_dir, setup.recipe, ["test"]), StopRequest()) == "finished"
    return checkpoint.net_arrays(setup.net)


def final_checkpoint(run_dir: Path) -> dict:
    path, content = checkpoint.find_latest(run_dir / "checkpoints")
    return content


def assert_close(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-5, err_msg=name)


def only_run(store: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def test_two_workers_train_like_one_process_with_the_global_batch(job_factory, store, tmp_path, request):
    job = job_factory()
    assert job.wait() == 0, job.output
    assert not job.left_running()
    content = final_checkpoint(job.run_dir)
    assert content["state"].step == 3 * STEPS_PER_EPOCH
    # both workers end bit-identical, and rank 0's checkpoint holds those weights
    start = job.digests("weights")
    assert sorted(start) == [0, 1] and start[0] == start[1], job.output
    digests = job.digests()
    assert sorted(digests) == [0, 1] and digests[0] == digests[1] == digest_arrays(content["params"]), job.output
    assert_close(content["params"], one_process_reference(tmp_path / "reference"))
    assert "global batch 32" in job.output and "batch 16 per worker" in job.output
    client, run = only_run(store, request.node.name)     # rank 0 alone tracks
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/top1")] == [1, 2, 3]
    assert run.data.metrics["val/top1"] > 0.5
    assert run.data.params["train.kvstore"] == "dist_sync"


def test_sigterm_stops_with_a_checkpoint_and_the_rerun_resumes_it(job_factory, store, tmp_path, request):
    # a run directory per worker, as on machines without a shared filesystem: only rank 0's has checkpoints
    separate_dirs = f"--output {tmp_path / 'runs'}/slot-$SLOT"
    job = job_factory(per_worker=separate_dirs)
    job.wait_for(r"\[rank0\] .*epoch 2/3 batch 20/")
    job.proc.send_signal(signal.SIGTERM)
    tic = time.monotonic()
    assert job.wait(timeout=120) == 128 + signal.SIGTERM, job.output
    assert time.monotonic() - tic < 60 and not job.left_running()
    stopped = final_checkpoint(job.run_dir)
    assert STEPS_PER_EPOCH < stopped["state"].step < 2 * STEPS_PER_EPOCH
    assert '"status": "killed"' in (job.run_dir / "status.json").read_text()

    rerun = job_factory(per_worker=separate_dirs)       # the same command again
    assert rerun.wait() == 0, rerun.output
    step = stopped["state"].step
    assert f"rank 0 starts at epoch 1, step {step}" in rerun.output
    follower = f"rank 1: starting at rank 0's epoch 1, step {step}; this worker's run directory says epoch 0"
    assert follower in rerun.output
    assert f"rank 1 starts at epoch 1, step {step}" in rerun.output
    content = final_checkpoint(rerun.run_dir)
    digests = rerun.digests()
    assert digests[0] == digests[1] == digest_arrays(content["params"]), rerun.output
    # equal to one process resumed from that checkpoint: the servers' lr schedule resumed at the right step
    assert_close(content["params"], one_process_reference(tmp_path / "reference", resume_from=stopped))
    client, run = only_run(store, request.node.name)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/top1")] == [1, 2, 3]


# Rank 0, on the last batch of epoch 2: SIGTERM to the launcher (which passes it on to every worker, as a user's
# stop does), then wait for it to arrive here: the stop lands on that batch whatever the machine's speed.
STOP_ON_THE_LAST_BATCH_OF_EPOCH_2 = """
import time
from pathlib import Path
from research.training import report, signals
arrived, handle = [], signals.StopRequest._handle
def handle_and_note(self, signum, frame):
    arrived.append(signum)
    handle(self, signum, frame)
signals.StopRequest._handle = handle_and_note
advance = report.Report.advance
def advance_then_stop(self):
    advance(self)
    if self.enabled and (self.state.epoch + 1, self.state.batch_in_epoch) == (2, self.steps_per_epoch):
        os.kill(int(Path(os.environ["LAUNCHER_PID_FILE"]).read_text()), signal.SIGTERM)
        while not arrived:
            time.sleep(0.01)
report.Report.advance = advance_then_stop
"""


def test_a_stop_on_an_epochs_last_batch_resumes_on_every_worker(job_factory, store, tmp_path, request, monkeypatch):
    monkeypatch.setenv("LAUNCHER_PID_FILE", str(tmp_path / "launcher.pid"))
    job = job_factory(patch=STOP_ON_THE_LAST_BATCH_OF_EPOCH_2)
    (tmp_path / "launcher.pid").write_text(str(job.proc.pid))
    assert job.wait(timeout=300) == 128 + signal.SIGTERM, job.output
    stopped = final_checkpoint(job.run_dir)["state"]
    assert (stopped.epoch, stopped.batch_in_epoch, stopped.step) == (1, STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH)

    rerun = job_factory()                               # the same command again: every worker skips to the end
    assert rerun.wait() == 0, rerun.output
    digests = rerun.digests()
    assert digests[0] == digests[1] == digest_arrays(final_checkpoint(rerun.run_dir)["params"]), rerun.output
    client, run = only_run(store, request.node.name)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/top1")] == [1, 2, 3]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train/batches")] == [STEPS_PER_EPOCH] * 3


def test_a_killed_worker_ends_the_job_with_an_error(job_factory, store, request):
    job = job_factory("--set", "train.epochs=30", per_worker="--set train.seed=$SLOT")
    pid = int(job.wait_for(r"worker rank 1 of 2 \(dist_sync, pid (\d+)").group(1))
    job.wait_for(r"\[rank0\] .*epoch 1/30 batch 20/")
    start = job.digests("weights")                     # seeded differently, yet both start from rank 0's weights
    assert sorted(start) == [0, 1] and start[0] == start[1], job.output
    psutil.Process(pid).kill()
    tic = time.monotonic()
    code = job.wait(timeout=120)
    assert code != 0 and time.monotonic() - tic < 60, job.output
    assert "(rank 1) on localhost was killed by SIGKILL" in job.output
    assert not job.left_running()
    _, run = only_run(store, request.node.name)
    assert run.info.status in ("FAILED", "KILLED")                   # never left RUNNING
    assert json.loads((job.run_dir / "status.json").read_text())["status"] in ("failed", "killed")


def test_a_recipe_without_a_dist_kvstore_is_refused(job_factory):
    job = job_factory("--set", "train.kvstore=device")
    assert job.wait() == 2, job.output
    assert "use --set train.kvstore=dist_sync" in job.output
    assert not job.left_running()


def test_a_missing_hosts_file_is_one_line(tmp_path):
    proc = subprocess.run([PYTHON, "tools/launch_dist.py", "--hosts", str(tmp_path / "none"), "--", "true"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "cannot read" in proc.stderr
