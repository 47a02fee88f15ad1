"""tools/build_rec.py and tools/benchmark.py run as a user would: build, train on it, break it."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import fill


def colour_folders(root: Path, per_class: int, size=(36, 44), seed: int = 0) -> Path:
    """Two classes a net separates at once: reddish and bluish noisy images."""
    rng = np.random.RandomState(seed)
    for label, rgb in enumerate([(200, 40, 40), (40, 60, 200)]):
        (root / f"c{label}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = np.clip(np.array(rgb) + rng.randint(-60, 60, size + (3,)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / f"c{label}" / f"{i}.jpg"), image[:, :, ::-1])
    return root


def write_recipe(path: Path, out: Path, **data) -> Path:
    data = {"kind": "recordio", "train_rec": str(out / "train.rec"), "val_rec": str(out / "train_val.rec"),
            "data_shape": [3, 28, 28], "mean": "rec", "std": [60.0, 60.0, 60.0], **data}
    recipe = {"name": "rec_tiny", "net": {"name": "lenet", "classes": 2}, "data": data,
              "train": {"epochs": 3, "batch_size": 16, "lr": 0.002, "log_every": 2}}
    path.write_text(json.dumps(recipe))          # JSON is YAML
    return path


@pytest.mark.slow
def test_build_then_train_as_a_user_would(tmp_path, run_tool, env):
    src = colour_folders(tmp_path / "src", per_class=60)
    out = tmp_path / "data"
    built = run_tool("build_rec.py", src, out / "train", "--holdout", 20, "--resize", 32, env=env, check=True)
    assert "wrote" in built.stdout and "train_val.rec: 20 images" in built.stdout
    recipe = write_recipe(tmp_path / "rec_tiny.yaml", out)
    trained = run_tool("train.py", recipe, "--output", tmp_path / "run", env=env, check=True)
    top1 = float(trained.stdout.split("val top-1 ")[1].split(",")[0])
    assert top1 >= 0.9, trained.stdout


def test_killed_build_leaves_no_finished_output(tmp_path, repo, env):
    src = colour_folders(tmp_path / "src", per_class=150, size=(240, 320))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(repo / "tools" / "build_rec.py"), str(src),
                             str(out), "--workers", "1", "--quiet"], env=env, cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = Path(f"{out}.rec.partial")
    deadline = time.monotonic() + 120
    while not (partial.exists() and partial.stat().st_size > 0) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)          # as an out-of-memory kill or a lost machine would
    assert proc.wait() == -signal.SIGKILL, "the build finished before it could be killed: make it bigger"
    left = sorted(p.name for p in tmp_path.glob("out*"))
    assert left and all(name.endswith(".partial") for name in left), left


def test_bad_files_are_reported_and_the_build_succeeds(tmp_path, run_tool, env):
    src = colour_folders(tmp_path / "src", per_class=4)
    (src / "c0" / "notes.jpg").write_text("an HTML error page saved as .jpg")
    from PIL import Image
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).convert("CMYK").save(src / "c1" / "print.jpg")
    proc = run_tool("build_rec.py", src, tmp_path / "out", "--quiet", env=env, check=True)
    assert "converted: 1 file(s)" in proc.stdout and "c1/print.jpg: CMYK" in proc.stdout
    assert "skipped: 1 file(s)" in proc.stdout and "c0/notes.jpg: not an image" in proc.stdout
    report = json.loads((tmp_path / "out.report.json").read_text())
    assert [e["file"] for e in report["skipped"]] == ["c0/notes.jpg"]
    assert len((tmp_path / "out.lst").read_text().splitlines()) == 9


def test_user_errors_print_one_line_and_exit_2(tmp_path, run_tool, env):
    missing = run_tool("build_rec.py", tmp_path / "nowhere", tmp_path / "out", env=env)
    assert missing.returncode == 2 and "source folder not found" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    colour_folders(tmp_path / "src", per_class=1)
    no_truth = run_tool("build_rec.py", tmp_path / "src", tmp_path / "out", "--layout", "imagenet-val", env=env)
    assert no_truth.returncode == 2 and "--ground-truth" in no_truth.stderr


def test_full_disk_names_the_file_and_leaves_no_partial_files(tmp_path, run_tool, env, small_disk):
    src = colour_folders(tmp_path / "src", per_class=100, size=(64, 64))       # about 1.6 MB of JPEGs
    fill(small_disk, leave=300 * 1024)
    proc = run_tool("build_rec.py", src, small_disk / "out", "--quiet", env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"could not write {small_disk}/out." in proc.stderr and "No space left on device" in proc.stderr
    assert "partial files were removed" in proc.stderr
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast"]


def test_read_only_output_is_one_line(tmp_path, run_tool, env):
    src = colour_folders(tmp_path / "src", per_class=1)
    proc = run_tool("build_rec.py", src, "/proc/out", "--quiet", env=env)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "could not write /proc/out.lst.partial" in proc.stderr


def test_benchmark_data_reports_both_pipelines(tmp_path, run_tool, env, repo):
    src = colour_folders(tmp_path / "src", per_class=40)
    run_tool("build_rec.py", src, tmp_path / "data" / "train", "--holdout", 8, "--quiet", env=env, check=True)
    recipe = write_recipe(tmp_path / "bench.yaml", tmp_path / "data")
    proc = run_tool("benchmark.py", "data", recipe, "--threads", "1,2", "--seconds", "0.5", env=env, check=True)
    rows = [line.split() for line in proc.stdout.splitlines()[1:5]]
    assert [(row[0], row[1]) for row in rows] == [("ImageRecordIter", "1"), ("ours", "1"),
                                                  ("ImageRecordIter", "2"), ("ours", "2")]
    assert all(float(row[4]) > 0 for row in rows)
    wrong = run_tool("benchmark.py", "data", repo / "recipes" / "smoke" / "lenet_digits_tiny.yaml", env=env)
    assert wrong.returncode == 2 and "not 'recordio'" in wrong.stderr


def test_benchmark_rec_runs_im2rec_and_ours_on_the_same_folder(tmp_path, run_tool, env):
    src = colour_folders(tmp_path / "src", per_class=12, size=(48, 64))
    proc = run_tool("benchmark.py", "rec", src, "--resize", 32, "--workers", 2, "--repeats", 1, env=env, check=True)
    rows = {line.split("  ")[0]: line.split() for line in proc.stdout.splitlines() if line.startswith(("im2rec", "tools"))}
    assert rows["im2rec.py (MXNet)"][-2] == rows["tools/build_rec.py"][-2] == "24"      # images each packed
    assert "ours / im2rec speed:" in proc.stdout
    missing = run_tool("benchmark.py", "rec", tmp_path / "nowhere", env=env)
    assert missing.returncode == 2 and "is not a folder" in missing.stderr


def test_a_link_out_of_the_source_is_refused_in_one_line(tmp_path, run_tool, env):
    src = colour_folders(tmp_path / "src", per_class=2)
    (tmp_path / "elsewhere").mkdir()
    cv2.imwrite(str(tmp_path / "elsewhere" / "id_card.jpg"), np.zeros((30, 30, 3), np.uint8))
    (src / "c0" / "3.jpg").symlink_to(tmp_path / "elsewhere" / "id_card.jpg")
    proc = run_tool("build_rec.py", src, tmp_path / "out", "--quiet", env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {src}/c0/3.jpg links to {tmp_path}/elsewhere/id_card.jpg, outside the source folder {src}; pass "
        f"--follow-links to pack what such links point to, or remove the link."]
    assert not list(tmp_path.glob("out*"))
    followed = run_tool("build_rec.py", src, tmp_path / "out", "--quiet", "--follow-links", env=env, check=True)
    assert "out.rec: 5 images" in followed.stdout
