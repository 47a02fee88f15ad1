"""Train the trials of a sweep: python tools/sweep.py recipes/lenet_digits.yaml --grid train.lr=0.01,0.02 ..."""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from research.errors import ExitCode, exit_status_help, help_words, tool_exit  # noqa: E402
from research.metrics import VAL_TOP1  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train a recipe over a grid of values (--grid, repeatable: every combination), a random "
                    "search (--random N over --range) or a model-based search (--sampler tpe|cmaes --trials N), each "
                    "trial a tools/train.py run in its own folder under the sweep's, several at once, the losers "
                    "stopped early with --prune; in MLflow one parent run with the trials under it. The sweep's "
                    "study is SWEEP_DIR/study.db: the same command again continues the sweep (after a kill -9 too): "
                    "finished, pruned and failed trials are kept, stopped ones resume, the rest start.",
        epilog=exit_status_help(
            (ExitCode.OK, "the sweep ran to its end (the summary names any trial that failed, and why)"),
            ExitCode.FAILED, (ExitCode.USER_ERROR, "a user error (a bad option, a trial's recipe, the folder in "
                                                   "use or holding another sweep)"), ExitCode.SIGNAL)
               + " A stop signal reaches every running trial, which checkpoints first. A trial stopped by the guard "
               "(NaN, dead head) is not trained again by the same command: delete its folder to retry it. A trial "
               "the pruner stops exits " + help_words(ExitCode.PRUNED) + ".")
    parser.add_argument("recipe", help="recipe YAML file, e.g. recipes/lenet_digits.yaml")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="values of one recipe key, as --set takes them (lists in [...]); repeatable: the "
                             "sweep trains every combination (with --random: a choice per trial)")
    parser.add_argument("--random", type=int, default=0, metavar="N",
                        help="a random search of N trials over --range (and --grid) values instead of the grid")
    parser.add_argument("--range", dest="ranges", action="append", default=[], metavar="KEY=LOW:HIGH[:log]",
                        help="values drawn uniformly between LOW and HIGH (:log log-uniform; integers if both "
                             "are), for --random; floats drawn to 3 significant digits")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random search's draws or of the model-based "
                                                            "sampler (default 0)")
    parser.add_argument("--sampler", choices=("grid", "random", "tpe", "cmaes"), default=None,
                        help="how the next trial's values are chosen: grid (--grid only, the default), random "
                             "(--random N), tpe (Optuna's TPE over --range and --grid values: a model of the trials "
                             "before), cmaes (CMA-ES, two or more numeric --range keys); tpe and cmaes need --trials")
    parser.add_argument("--trials", type=int, default=0, metavar="N",
                        help="trials of a model-based search (--sampler tpe or cmaes; --trials alone means tpe)")
    parser.add_argument("--prune", choices=("none", "median", "halving", "hyperband"), default="none",
                        help="stop the trials that fall behind, after an epoch's checkpoint: median (worse than the "
                             "median of the finished trials at the same epoch, once 2 have finished), halving "
                             "(asynchronous successive halving: the best third go on at epochs W, 3W, 9W ...), "
                             "hyperband; default none")
    parser.add_argument("--prune-warmup", type=int, default=0, metavar="W",
                        help="epochs every trial trains before the pruner may stop it (default a tenth of the "
                             "trials' epochs, at least 1)")
    parser.add_argument("--max-epochs", type=int, default=0, metavar="N",
                        help="budget: no new trial starts once the trials have trained N epochs in all (those "
                             "running go on to their end)")
    parser.add_argument("--max-hours", type=float, default=0.0, metavar="H",
                        help="budget: no new trial starts once the trials' processes have run H hours in all (two "
                             "at once for an hour count 2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe value for every trial, as tools/train.py --set")
    parser.add_argument("--metric", default=VAL_TOP1,
                        help="per-epoch metric the trials are ranked by, its best epoch (default val/top1)")
    parser.add_argument("--goal", choices=("max", "min"), default=None,
                        help="maximise or minimise --metric (default: min for a loss, else max)")
    parser.add_argument("--output", type=Path, default=None,
                        help="the sweep's folder, each trial's run directory inside it; default "
                             "runs/<recipe>-sweep-<keys>/ (a random search: -random-)")
    parser.add_argument("--gpus", default=None, help="GPU ids shared out to the trials, e.g. 0,1,2,3; omit for "
                                                   "the CPU")
    parser.add_argument("--gpus-per-trial", type=int, default=1, metavar="K",
                        help="GPUs each trial trains on (data-parallel); --gpus 0,1,2,3 --gpus-per-trial 1 runs "
                             "four trials at once")
    parser.add_argument("--parallel", type=int, default=None, metavar="N",
                        help="trials at once (default: one per GPU group, 1 on the CPU); the cores are split "
                             "between them (each trial's OMP_NUM_THREADS)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: move the sweep's folder aside (to <dir>.old-<time>) first")
    parser.add_argument("--detach", action="store_true",
                        help="run the sweep in a new detached tmux session, as tools/launch.py does a run "
                             "(RESEARCH_TMUX_SOCKET=NAME: a private tmux server)")
    parser.add_argument("--name", default=None, help="with --detach: the tmux session; default the sweep's folder")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from research.detached.launch import SOCKET_ENV
    from research.sweeps.spec import make_spec
    from research.sweeps.sweeper import Budget, launch_sweep, run_sweep

    spec = make_spec(args.recipe, args.grid, args.ranges, args.random, args.seed, args.overrides, args.metric,
                     args.goal, args.sampler, args.trials, args.prune, args.prune_warmup)
    if args.detach:
        inner = [a for i, a in enumerate(argv) if a != "--detach" and a != "--name" and argv[i - 1:i] != ["--name"]
                 and not a.startswith("--name=")]
        started = launch_sweep(spec, inner, args.output, args.fresh, args.name, os.environ.get(SOCKET_ENV) or None)
        print(started.instructions(shlex.join(["python", "tools/sweep.py", *[a for a in argv if a != "--fresh"]])))
        return 0
    result = run_sweep(spec, args.output, args.gpus, args.gpus_per_trial, args.parallel, args.fresh,
                       ["tools/sweep.py", *argv], Budget(args.max_epochs, args.max_hours))
    return result.exit_code


if __name__ == "__main__":
    tool_exit(main)
