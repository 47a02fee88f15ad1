"""Every command README.md and docs/*.md show, as written: the cheap ones run for real in a fresh copy of the
checkout (its own runs/ and mlruns/, as a new user's clone), with a tiny `--set train.epochs=1` where they train;
those that need GPUs, other machines, ImageNet or hours are checked up to their arguments and recipe; installs,
ssh and the like are listed with why they are not run. A command the docs gain that this file does not know fails
the first test, so the docs cannot drift from what runs."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from research.config import load_recipe
from research.paths import REPO
from research.tracking.ui import ui_command

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^ *```(\w*)\n(.*?)^ *```", re.S | re.M)
ONE_EPOCH = " --set train.epochs=1"

# How each documented command is checked. RUN: for real in the copy, in the order the docs give them, with the
# text after the command appended (a tiny run); PARSE: the tool's parse_args and the recipe with its --set values
# (a different text: what is checked in its place, e.g. without a placeholder); IMPORTS: what its python -c
# imports exists; SERVER: it is tools/ui.py's server command; SKIP: not run, and why.
RUN, PARSE, IMPORTS, SERVER, SKIP = "run", "parse", "imports", "server", "skip"
INSTALL = "an install: .ci/run installs the same way before the tests"
HOW: dict[str, tuple[str, str]] = {
    # README
    "python3.11 -m venv .venv && .venv/bin/pip install -e '.[cpu]' && .venv/bin/python tools/train.py "
    "recipes/lenet_digits.yaml": (RUN, ONE_EPOCH),
    "python3.11 -m venv .venv && .venv/bin/pip install -q -e '.[cpu,test]' && .venv/bin/pip install -q --no-deps "
    "gluoncv==0.10.5.post0 && .venv/bin/python -m pytest": (SKIP, "this test suite itself, installed as .ci/run does"),
    "python3.11 -m venv .venv && .venv/bin/pip install -e '.[cu112]' && .venv/bin/pip install --no-deps "
    "gluoncv==0.10.5.post0": (SKIP, INSTALL),
    "python tools/doctor.py": (RUN, ""),
    "python tools/train.py recipes/lenet_mnist.yaml --gpus 0": (PARSE, ""),
    "python tools/train.py recipes/squeezenet_imagenet.yaml --gpus 0,1": (PARSE, ""),
    "python tools/train.py recipes/lenet_mnist.yaml --set train.lr=0.05 --set train.lr_steps=[8,15] "
    "--set data.root=/data/mnist": (PARSE, ""),
    "python tools/sweep.py recipes/lenet_digits.yaml --grid train.lr=0.01,0.02 --grid train.warmup_epochs=0,1 "
    "--parallel 2": (RUN, ONE_EPOCH),
    "python tools/ui.py --serve": (PARSE, ""),
    "ssh -N -L 5000:127.0.0.1:5000 user@gpubox": (SKIP, "a tunnel from a laptop to another machine"),
    ".venv/bin/pip install -e '.[cpu,notebook]' && .venv/bin/jupyter lab notebooks/lenet_digits.ipynb":
        (SKIP, "an install and an interactive server: tests/e2e/test_notebook.py executes the notebook"),
    # docs/comparing.md
    "python tools/train.py recipes/lenet_digits.yaml --set train.epochs=5 --set train.lr=0.02 --output runs/lr0.02":
        (RUN, ONE_EPOCH),
    "python tools/train.py recipes/lenet_digits.yaml --set train.epochs=5 --set train.lr=0.05 --output runs/lr0.05":
        (RUN, ONE_EPOCH),
    "python tools/compare.py --experiment lenet_digits --plot runs.png": (RUN, ""),
    "python tools/sweep.py recipes/lenet_digits.yaml --random 8 --range train.lr=1e-3:1e-1:log "
    "--range train.wd=1e-5:1e-3:log --seed 0": (PARSE, ""),
    "python tools/sweep.py recipes/squeezenet_imagenet.yaml --grid train.lr=0.01,0.02 --gpus 0,1,2,3 "
    "--gpus-per-trial 1": (PARSE, ""),
    "python tools/sweep.py recipes/lenet_digits.yaml --grid train.lr=0.0001,0.0003,0.001,0.003,0.01,0.03,0.1,0.3,1.0 "
    "--parallel 2": (PARSE, ""),
    "python tools/sweep.py recipes/lenet_digits.yaml --grid train.lr=0.0001,0.0003,0.001,0.003,0.01,0.03,0.1,0.3,1.0 "
    "--parallel 2 --prune halving": (PARSE, ""),
    "python tools/sweep.py recipes/lenet_digits.yaml --grid train.lr=0.0001,0.0003,0.001,0.003,0.01,0.03,0.1,0.3,1.0 "
    "--parallel 2 --prune median": (PARSE, ""),
    "python tools/sweep.py recipes/lenet_digits.yaml --sampler tpe --trials 12 --range train.lr=1e-4:1:log "
    "--range train.momentum=0.5:0.99 --prune median --parallel 2": (PARSE, ""),
    "python tools/sweep.py recipes/squeezenet_imagenet.yaml --sampler tpe --trials 8 --range train.lr=1e-3:4e-2:log "
    "--prune halving --max-epochs 320 --gpus 0,1,2,3": (PARSE, ""),
    "python tools/sweep.py recipes/squeezenet_imagenet.yaml --sampler tpe --trials 8 --range train.lr=1e-3:4e-2:log "
    "--prune median --gpus 0,1,2,3 --gpus-per-trial 1": (PARSE, ""),
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server --backend-store-uri sqlite:///$PWD/mlruns/mlflow.db "
    "--host 127.0.0.1 --port 5000 --workers 1 --uvicorn-opts=--no-access-log": (SERVER, ""),
    "python tools/predict.py runs/lr0.02 three.png": (RUN, ""),
    "python tools/predict.py runs/lr0.02 scanned.png --top 2": (RUN, ""),
    # docs/development.md
    ".venv/bin/python -m pytest": (SKIP, "this test suite itself"),
    '.venv/bin/python -m pytest -m "not slow"': (SKIP, "this test suite itself"),
    "python tools/benchmark.py train recipes/squeezenet_imagenet.yaml [--gpus 0,1]":
        (PARSE, "python tools/benchmark.py train recipes/squeezenet_imagenet.yaml --gpus 0,1"),
    "python tools/benchmark.py data recipes/squeezenet_imagenet.yaml --threads 1,2,4,0": (PARSE, ""),
    "python tools/benchmark.py checkpoint recipes/squeezenet_imagenet.yaml": (PARSE, ""),
    "python tools/benchmark.py rec SRC --resize 256 --quality 95 --workers 2": (PARSE, ""),
    # docs/distributed.md
    "printf 'localhost\\nlocalhost\\n' > hosts.txt": (RUN, ""),
    "python tools/launch_dist.py --hosts hosts.txt -- python tools/train.py recipes/smoke/lenet_digits_dist.yaml "
    "--output runs/dist": (PARSE, ""),
    # docs/long-runs.md
    "nvidia-smi": (SKIP, "needs the NVIDIA driver"),
    ".venv/bin/python tools/doctor.py": (RUN, ""),
    "docker run --gpus all -it --rm --ipc=host -v \"$PWD\":/workspace/research -w /workspace/research "
    "nvcr.io/nvidia/mxnet:24.05-py3": (SKIP, "NVIDIA's container, on a GPU machine"),
    "pip install -e . && pip install --no-deps gluoncv==0.10.5.post0": (SKIP, INSTALL + " (inside the container)"),
    "python tools/doctor.py && python tools/train.py recipes/squeezenet_imagenet.yaml --gpus 0,1":
        (PARSE, "python tools/train.py recipes/squeezenet_imagenet.yaml --gpus 0,1"),
    "python tools/benchmark.py plan recipes/squeezenet_imagenet.yaml --gpus 0 --price-per-hour 3.06": (PARSE, ""),
    "python tools/benchmark.py plan recipes/squeezenet_imagenet.yaml --set data.train_rec=... "
    "--set data.val_rec=... --set train.batch_size=32 --price-per-hour 3.06 --epoch-images 1281167":
        (PARSE, "python tools/benchmark.py plan recipes/squeezenet_imagenet.yaml --set data.train_rec=d/train.rec "
                "--set data.val_rec=d/val.rec --set train.batch_size=32 --price-per-hour 3.06 --epoch-images 1281167"),
    "MLFLOW_TRACKING_URI=sqlite:///$PWD/mlruns/mlflow.db mlflow models serve -m models:/m-<model id> "
    "--env-manager local -p 5001": (SKIP, "a model id to fill in; tests/e2e/test_train.py loads the logged model"),
    "curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' -d '{\"inputs\": [\"/data/cat.jpg\"]}'":
        (SKIP, "asks the model server of the command above"),
    "ssh user@gpubox": (SKIP, "a login to another machine"),
    "cd ~/research": (SKIP, "the checkout on that machine"),
    "python tools/launch.py recipes/lenet_mnist.yaml --gpus 0,1": (PARSE, ""),
    "python tools/status.py": (RUN, ""),
    "tmux send-keys -t lenet_mnist C-c": (SKIP, "stops a tmux run: tests/e2e/test_launch.py does"),
    "python tools/launch.py recipes/squeezenet_imagenet.yaml --gpus 0 --keep-alive --notify "
    "'mail -s \"squeezenet\" me@example.com'": (PARSE, ""),
    "python tools/launch.py --list": (RUN, ""),
    "python tools/launch.py --forget runs/lenet_mnist": (PARSE, ""),
    "--notify 'mail -s \"run: $RESEARCH_EVENT\" me@example.com'":
        (PARSE, "python tools/launch.py recipes/lenet_mnist.yaml --keep-alive --notify 'mail -s \"run\" me@example.com'"),
    "--notify 'curl -fsS -m 20 -d @- https://hooks.example.com/T000/B000'":
        (PARSE, "python tools/launch.py recipes/lenet_mnist.yaml --keep-alive --notify 'curl -fsS -d @- https://x'"),
    "--notify 'ntfy publish mytopic'":
        (PARSE, "python tools/launch.py recipes/lenet_mnist.yaml --keep-alive --notify 'ntfy publish mytopic'"),
    "tmux new-session -d -s mlflow \"$(python -c 'from research.tracking import ui_command; print(ui_command())')\"":
        (IMPORTS, ""),
    # docs/notebook.md
    ".venv/bin/pip install -e '.[cpu,notebook]'": (SKIP, INSTALL),
    ".venv/bin/jupyter lab notebooks/lenet_digits.ipynb": (SKIP, "an interactive server: test_notebook.py runs it"),
    # docs/recordio.md
    "python tools/build_rec.py ~/photos data/photos/train --resize 256 --holdout 500": (PARSE, ""),
    "python tools/build_rec.py ILSVRC/Data/CLS-LOC/train data/imagenet/train --layout imagenet-train --resize 256 "
    "--quality 95 --holdout 50000 --synset-words LOC_synset_mapping.txt": (PARSE, ""),
    "python tools/build_rec.py ILSVRC/Data/CLS-LOC/val data/imagenet/val --layout imagenet-val --resize 256 "
    "--ground-truth LOC_val_solution.csv --classes data/imagenet/train.classes.json": (PARSE, ""),
    "python tools/build_rec.py dogs-vs-cats/train data/dvc/train --layout dogs-vs-cats --holdout 2500": (PARSE, ""),
    "python tools/build_rec.py dogs-vs-cats/test data/dvc/test --layout dogs-vs-cats": (PARSE, ""),
    "python -c \"from research.bench.data import write_sample_images as w; w('data/sample', classes=4, "
    "per_class=750)\"": (IMPORTS, ""),
    "python tools/build_rec.py data/sample data/sample_rec/train --holdout 400": (PARSE, ""),
    # docs/squeezenet-stability.md
    "python tools/stability.py run --out runs/stability-64-s0.jsonl --seeds 0 --steps 200 --size 64 --variants "
    "elu/xavier elu/xavier+warmup elu/xavier+std relu/caffe": (PARSE, ""),
    "python tools/stability.py run --out runs/stability-64-s1.jsonl --seeds 1 ...":
        (PARSE, "python tools/stability.py run --out runs/stability-64-s1.jsonl --seeds 1"),
    "python tools/stability.py run --out runs/stability-227.jsonl --variants elu/xavier+std --seeds 0 --steps 150 "
    "--size 227": (PARSE, ""),
    "python tools/stability.py report runs/stability-64-s0.jsonl runs/stability-64-s1.jsonl "
    "--png docs/img/squeezenet-stability-64.png": (PARSE, ""),
    "python tools/stability.py report runs/stability-227.jsonl --png docs/img/squeezenet-stability-227.png":
        (PARSE, ""),
    "python tools/build_rec.py ILSVRC2012/val data/imagenet/val --layout imagenet-val --resize 256 "
    "--ground-truth LOC_val_solution.csv --classes data/imagenet/train.classes.json": (PARSE, ""),
    "python tools/evaluate.py recipes/squeezenet1.0_gluoncv.yaml --rec data/imagenet/val.rec --crops 1 --no-log":
        (PARSE, ""),
    # docs/squeezenet.md
    "mkdir -p ILSVRC2012/train ILSVRC2012/val": (SKIP, "unpacking ImageNet, which the tests do not have"),
    "tar -xf ILSVRC2012_img_train.tar -C ILSVRC2012/train": (SKIP, "unpacking ImageNet"),
    "for f in ILSVRC2012/train/n*.tar; do d=${f%.tar}; mkdir -p $d && tar -xf $f -C $d && rm $f; done":
        (SKIP, "unpacking ImageNet"),
    "tar -xf ILSVRC2012_img_val.tar -C ILSVRC2012/val": (SKIP, "unpacking ImageNet"),
    "python tools/build_rec.py ILSVRC2012/train data/imagenet/train --layout imagenet-train --resize 256 "
    "--quality 95 --holdout 50000 --synset-words LOC_synset_mapping.txt": (PARSE, ""),
    "python tools/train.py recipes/squeezenet_imagenet.yaml --gpus 0": (PARSE, ""),
    "python tools/launch.py recipes/squeezenet_imagenet.yaml --gpus 0,1": (PARSE, ""),
    "tmux attach -t squeezenet_imagenet": (SKIP, "attaches a terminal to a tmux run"),
    "tmux send-keys -t squeezenet_imagenet C-c": (SKIP, "stops a tmux run: tests/e2e/test_launch.py does"),
    "python tools/evaluate.py runs/squeezenet_imagenet --rec data/imagenet/train_val.rec --gpus 0,1": (PARSE, ""),
    "python tools/benchmark.py train recipes/squeezenet_imagenet.yaml --gpus 0,1": (PARSE, ""),
    "python tools/benchmark.py data recipes/squeezenet_imagenet.yaml": (PARSE, ""),
    # docs/transfer.md
    "python tools/build_rec.py ~/kaggle/dogs-vs-cats/train data/dogs-vs-cats/train --layout dogs-vs-cats "
    "--resize 256 --holdout 2500": (PARSE, ""),
    "python tools/build_rec.py ~/kaggle/dogs-vs-cats/test data/dogs-vs-cats/test --layout dogs-vs-cats --resize 256":
        (PARSE, ""),
    "python tools/train.py recipes/resnet50_dogs_vs_cats.yaml --gpus 0": (PARSE, ""),
}


def documented_commands() -> list[tuple[str, str]]:
    """(file, command) for every line of a ```bash block, and every `$ ` line of another block, in the docs'
    order: continuation lines joined, comments and repeated spaces dropped."""
    found = []
    for path in DOCS:
        for lang, body in FENCE.findall(path.read_text()):
            for line in body.replace("\\\n", " ").splitlines():
                line = line.strip()
                if lang not in ("bash", "sh"):
                    if not line.startswith("$ "):
                        continue
                    line = line[2:]
                line = re.sub(r"\s+", " ", re.sub(r"\s+#(\s.*)?$", "", line)).strip()
                if line and not line.startswith("#"):
                    found.append((path.name, line))
    return found


def test_every_documented_command_is_known_here():
    documented = {command for _, command in documented_commands()}
    unknown = sorted(documented - HOW.keys())
    assert not unknown, ("commands in the docs this test does not know how to check (add each to HOW):\n" +
                         "\n".join(unknown))
    gone = sorted(HOW.keys() - documented)
    assert not gone, "commands HOW lists that no doc shows any more (remove them):\n" + "\n".join(gone)


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"doc_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_arguments(words: list[str]) -> None:
    """`python TOOL ARGS`: the tool's parse_args takes ARGS, and a recipe among them loads with its --set values."""
    assert words[0] == "python" and words[1].startswith("tools/"), words
    args = _tool(Path(words[1]).stem).parse_args(words[2:])
    recipe = getattr(args, "recipe", None)
    if recipe and str(recipe).endswith(".yaml"):
        load_recipe(REPO / recipe, getattr(args, "overrides", []))


@pytest.mark.parametrize("command", sorted(c for c, (how, _) in HOW.items() if how == PARSE), ids=lambda c: c[:80])
def test_commands_for_gpus_other_machines_or_real_data_take_their_arguments(command):
    text = HOW[command][1] or command
    words = shlex.split(text)
    if "--" in words:                    # tools/launch_dist.py -- the command each worker runs
        cut = words.index("--")
        _check_arguments(words[cut + 1:])
        words = words[:cut]
    _check_arguments(words)


@pytest.mark.parametrize("command", sorted(c for c, (how, _) in HOW.items() if how == IMPORTS), ids=lambda c: c[:80])
def test_python_one_liners_import_what_exists(command):
    code = re.search(r"python -c ([\"'])(.*?)\1", command).group(2)
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}: {command}"


def test_the_documented_server_command_is_the_one_tools_ui_prints():
    (command,) = [c for c, (how, _) in HOW.items() if how == SERVER]
    mlflow = shlex.split(ui_command(5000))[1]
    printed = ui_command(5000).replace(mlflow, "mlflow").replace(f"sqlite:///{REPO}/", "sqlite:///$PWD/")
    assert printed == command


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh copy of the checkout (tools/, research/, recipes/; its own runs/ and mlruns/), where `python` and
    `.venv/bin/python` are this interpreter; with a digit 3 as the docs' three.png and a dark-on-white one as
    scanned.png."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("clone") / "research"
    for folder in ("research", "tools", "recipes"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "mlruns").mkdir()
    for bin_dir in (root / ".venv" / "bin", root / ".shims"):
        bin_dir.mkdir(parents=True)
        (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')     # this venv's python
        (bin_dir / "python").chmod(0o755)
    digits = load_digits()
    three = (digits.images[digits.target == 3][0] / 16 * 255).astype(np.uint8)
    Image.fromarray(three).resize((28, 28)).save(root / "three.png")
    Image.fromarray(255 - three).resize((28, 28)).save(root / "scanned.png")
    return root


def test_the_cheap_commands_run_as_written(clone):
    """In the docs' order, so that each finds what the ones before it made (the runs predict and compare read)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_TRACKING")}
    env["PATH"] = f"{clone / '.shims'}{os.pathsep}{env['PATH']}"
    done = set()
    for doc, command in documented_commands():
        how, extra = HOW[command]
        if how != RUN or command in done:
            continue
        done.add(command)
        script = command.split(" && ")[-1] + extra      # the install before a quickstart is .ci/run's
        proc = subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True,
                              timeout=600)
        said = f"{doc}: {script}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        if "tools/doctor.py" in command:          # 0: ready; 2: not ready (no GPU here), with the fix
            assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, said
            continue
        assert proc.returncode == 0, said
        assert "Traceback" not in proc.stderr, said
        if command.endswith("tools/train.py recipes/lenet_digits.yaml"):     # the quickstart, the store's first run
            assert "Creating initial MLflow database tables" not in proc.stdout + proc.stderr, said
            assert "Open the UI with:\n  python tools/ui.py --serve\nthen browse http://127.0.0.1:5000/" in proc.stdout
        if "predict.py" in command and "scanned.png" in command:
            assert "invert" in proc.stderr.lower() + proc.stdout.lower(), said
        elif "predict.py" in command:
            assert proc.stdout.splitlines()[1].split()[1] == "3", said       # the top class of three.png
    assert {"runs/lenet_digits", "runs/lr0.02", "runs/lr0.05", "runs/lenet_digits-sweep-lr-warmup_epochs"} <= \
        {str(p.relative_to(clone)) for p in (clone / "runs").iterdir()}
    assert (clone / "runs.png").stat().st_size > 0
