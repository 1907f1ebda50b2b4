"""Command-line parsing and dispatch only: `python -m compete COMMAND [NAME] [options]`."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .config import PREDICTING_MODELS, inputs_dir, load_competition, parse_sets, resolve_run
from .errors import PipelineError
from .files import DEFAULT_COMPETITION, data_dir


def learning_rate(text: str):
    """--lr value: a number, or 'auto' for the learning-rate finder's suggestion."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', not {text!r}") from None


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="./run.sh", description="Image-classification competition "
                                  "pipeline: train, then predict a submission.csv.")
    commands = top.add_subparsers(dest="command", required=True)

    def command(name, help_text):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("name", nargs="?", default=DEFAULT_COMPETITION,
                         help="competition (a file competition/NAME.yaml); default: digits")
        sub.add_argument("--data", help="read the competition's files from DIR instead of inputs/NAME")
        sub.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
        return sub

    _train_options(command("train", "train the competition's models into a new run folder"))
    _package_options(command("package", "write submissions/NAME/kaggle/: a run as a Kaggle dataset and an "
                             "offline kernel that predicts with it (code competitions)"))
    predict = command("predict", "write submissions/NAME/submission.csv from a trained run")
    predict.add_argument("--run", help="run id under submissions/NAME/runs (default: the latest)")
    predict.add_argument("--models", choices=PREDICTING_MODELS,
                         help="which of the run's models predict: its fold models, its models refit on "
                              "every labelled image (train --refit), or both half and half "
                              "(default: refit where the run has one, as its refit_blend says)")
    predict.add_argument("--time-limit", type=float, metavar="SECONDS",
                         help="end within SECONDS: measure each model's rate on the first images and "
                              "drop the costliest TTA views, then members, that would not fit")
    runs = commands.add_parser("runs", help="list runs, newest first: local and public score, members, "
                               "wall time and time limit, commit")
    runs.add_argument("name", nargs="?", help="competition; default: every competition with runs")
    report = commands.add_parser("report", help="write a run's HTML report with plots and print its path")
    report.add_argument("name", nargs="?", default=DEFAULT_COMPETITION, help="competition; default: digits")
    report.add_argument("--run", help="run id under submissions/NAME/runs (default: the latest finished)")
    compare = commands.add_parser("compare", help="two runs on the images both validated: the metric's "
                                  "difference with its 95% interval (paired bootstrap), how often B beats A, "
                                  "the classes that moved most")
    compare.add_argument("name", help="competition (a file competition/NAME.yaml)")
    compare.add_argument("run_a", help="run id under submissions/NAME/runs: the baseline")
    compare.add_argument("run_b", help="run id: the change")
    lr_find = command("lr-find", "sweep the learning rate over mini-batches; plot and suggest one per member")
    lr_find.add_argument("--preset", default="default", help="recipe whose members are swept")
    lr_find.add_argument("--member", type=int, help="sweep only this member (0 = first); default: all")
    check = command("check", "run every input check on the competition's files; list all problems")
    check.add_argument("--preset", default="default", help="preset whose validation split is checked")
    _site_commands(commands)
    return top


def _train_options(train: argparse.ArgumentParser) -> None:
    train.add_argument("--preset", default="default", help="recipe from the yaml's presets (e.g. fast, best)")
    train.add_argument("--epochs", type=int, help="epochs for every member")
    train.add_argument("--batch-size", type=int, help="batch size for every member")
    train.add_argument("--lr", type=learning_rate,
                       help="peak learning rate for every member, or 'auto': lr-find's suggestion per member")
    train.add_argument("--seed", type=int)
    train.add_argument("--folds", type=int, help="stratified k-fold cross-validation with K folds")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override any run or member setting, e.g. --set ema=0.999")
    train.add_argument("--resume", action="store_true",
                       help="continue the latest interrupted run (or --run ID) from its last complete epoch")
    train.add_argument("--run", help="with --resume: the run id to continue")
    train.add_argument("--gpus", type=int, default=1, metavar="N",
                       help="data-parallel over N processes via torchrun (one per GPU; gloo on CPU)")
    train.add_argument("--skip-bad-images", action="store_true",
                       help="drop unreadable training images (counted in the log) instead of stopping")
    train.add_argument("--refit", action="store_true", default=None,
                       help="after validation, train each member again on every labelled image; "
                            "predict averages those and the fold models half and half "
                            "(--set refit_blend=false: the refit alone)")
    train.add_argument("--pseudo", metavar="RUN",
                       help="the test images join training with RUN's blended test predictions as soft "
                            "targets (./run.sh predict NAME --run RUN first); validation never sees them")
    train.add_argument("--distill", metavar="RUN",
                       help="learn from RUN's soft predictions too: out-of-fold ones on the train images, "
                            "test ones on the test images (distill_weight, distill_temperature)")
    train.add_argument("--time-limit", type=int, metavar="SECONDS",
                       help="size epochs (then folds, members) so the whole command ends within SECONDS; "
                            "0 turns a preset's limit off")


def _package_options(package: argparse.ArgumentParser) -> None:
    package.add_argument("--run", help="run id under submissions/NAME/runs (default: the latest)")
    package.add_argument("--time-limit", type=float, metavar="SECONDS",
                         help="the kernel predicts within SECONDS (as predict --time-limit)")
    package.add_argument("--test-images", type=int, metavar="N",
                         help="print the expected runtime for N hidden test images (default: the public test's count)")


def _site_commands(commands) -> None:
    """init, download, submit and scores: the commands that meet the downloaded files and the site."""
    init = commands.add_parser("init", help="write competition/NAME.yaml from the downloaded files")
    init.add_argument("name", help="competition: its files are in inputs/NAME (or --data DIR)")
    init.add_argument("--data", help="read the competition's files from DIR instead of inputs/NAME")
    init.add_argument("--force", action="store_true", help="replace an existing competition/NAME.yaml")
    init.add_argument("--kaggle", metavar="SLUG", help="the Kaggle competition: written into the yaml, and "
                      "its files downloaded first when the data folder has none")
    download = commands.add_parser("download", help="fetch the competition's files into inputs/NAME "
                                   "with the Kaggle CLI (the yaml's kaggle: SLUG)")
    download.add_argument("name", help="competition (a file competition/NAME.yaml)")
    download.add_argument("--data", help="download into DIR instead of inputs/NAME")
    submit = commands.add_parser("submit", help="check submission.csv against the sample, upload it to "
                                 "Kaggle, record its public score in the run's history")
    submit.add_argument("name", help="competition (a file competition/NAME.yaml)")
    submit.add_argument("--data", help="the competition's files (for the sample) in DIR instead of inputs/NAME")
    submit.add_argument("--run", help="the run whose submission.csv this must be (default: whichever made it)")
    submit.add_argument("-m", "--message", help="leaderboard description (default: run, preset, members, "
                                                "local score, commit)")
    submit.add_argument("--wait", type=float, default=60, metavar="SECONDS",
                        help="how long to wait for Kaggle to score it (default 60)")
    submit.add_argument("--kernel", action="store_true",
                        help="a code competition: upload the packaged dataset, push the kernel, wait for "
                             "it and submit its output (./run.sh package NAME first)")
    submit.add_argument("--kernel-wait", type=float, default=9 * 3600, metavar="SECONDS",
                        help="with --kernel: how long to wait for the kernel to run (default 9 hours)")
    scores = commands.add_parser("scores", help="read the public scores of earlier uploads back from Kaggle")
    scores.add_argument("name", help="competition (a file competition/NAME.yaml)")


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends a run the way Ctrl-C does


def _train(args, comp, data_dir) -> int:
    from .atomic import release_all
    from .pipeline import train_competition
    from .runtime import start_session
    if args.resume:
        from .config import run_from_dict
        from .runs import RunFolder, claim_run, find_unfinished
        resume_dir = find_unfinished(comp.name, args.run)
        claim_run(resume_dir)  # refused while another process trains it
        run = run_from_dict(RunFolder(resume_dir).config()["run"])
    else:
        run_sets, member_sets = parse_sets(args.set)
        member_sets.update({k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                              ("lr", args.lr)) if v not in (None, "auto")})
        run_sets.update({"seed": args.seed, "folds": args.folds, "device": args.device,
                         "time_limit": args.time_limit, "refit": args.refit,
                         "pseudo": args.pseudo, "distill": args.distill})
        resume_dir, run = None, resolve_run(comp, args.preset, run_sets, member_sets)
    session = start_session(comp, run)
    if args.lr == "auto" and resume_dir is None:
        from .lrfind import apply_suggestions
        apply_suggestions(session, data_dir)
    try:
        train_competition(session, data_dir, args.skip_bad_images, resume_dir)
    finally:
        release_all()  # the run folder may be trained again (tests run commands in one process)
    return 0


def _predict(args, comp, data_dir) -> int:
    from .predict import predict_competition
    predict_competition(comp, data_dir, args.run, args.device, args.models, args.time_limit)
    return 0


def _package(args, comp, data_dir) -> int:
    from .package import package_run
    package_run(comp, data_dir, args.run, args.time_limit, args.test_images)
    return 0


def _lr_find(args, comp, data_dir) -> int:
    from .lrfind import find_lrs
    from .runtime import start_session
    find_lrs(start_session(comp, resolve_run(comp, args.preset, {"device": args.device})), data_dir,
             None if args.member is None else [args.member])
    return 0


def _check(args, comp, data_dir) -> int:
    from .check import check_competition, print_report
    return print_report(comp, data_dir, check_competition(comp, data_dir, args.preset))


def _init(args) -> int:  # init writes the yaml that the other data commands load
    from .init import init_competition
    folder = _download_folder(args) if args.kaggle else data_dir(args.name, args.data)
    init_competition(args.name, folder, args.force, args.kaggle)
    return 0


def _submit(args, comp, data_dir) -> int:
    if args.kernel:
        from .codesubmit import submit_kernel
        submit_kernel(comp, args.message, args.kernel_wait, args.wait)
        return 0
    from .leaderboard import submit
    submit(comp, data_dir, args.run, args.message, args.wait)
    return 0


def _download(args) -> int:  # the data folder is what this fills: it need not exist yet
    from .leaderboard import download
    comp = load_competition(args.name)
    download(comp, _download_folder(args))
    return 0


def _download_folder(args) -> Path:
    """Where downloaded files go: --data DIR, or inputs/NAME; it need not exist yet."""
    return Path(args.data).expanduser().resolve() if args.data else inputs_dir() / args.name


def _scores(args) -> int:
    from .leaderboard import read_pending_scores
    read_pending_scores(load_competition(args.name))
    return 0


def _runs(args) -> int:
    from .history import print_runs
    print_runs(args.name)
    return 0


def _compare(args) -> int:
    from .compare import compare_runs
    compare_runs(args.name, args.run_a, args.run_b)
    return 0


def _report(args) -> int:
    from .report import report_run
    print(report_run(args.name, args.run))
    return 0


ON_DATA = {"train": _train, "predict": _predict, "lr-find": _lr_find, "check": _check, "submit": _submit,
           "package": _package}
# runs, report, compare and scores read run folders only; download fills the data folder; init reads it
# without a yaml
NO_DATA = {"runs": _runs, "report": _report, "compare": _compare, "download": _download, "scores": _scores,
           "init": _init}  # init writes the yaml that the other commands load


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.command == "train" and args.gpus > 1:
        from . import distributed
        if not distributed.launched():
            rest = [a for i, a in enumerate(argv) if a != "--gpus" and (i == 0 or argv[i - 1] != "--gpus")
                    and not a.startswith("--gpus=")]
            return distributed.relaunch(args.gpus, rest)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.command in NO_DATA:
            return NO_DATA[args.command](args)
        comp = load_competition(args.name)
        return ON_DATA[args.command](args, comp, data_dir(args.name, args.data))
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = f" Continue with: ./run.sh train {args.name} --resume" if args.command == "train" else ""
        print(f"\nInterrupted; every completed epoch is saved.{hint}", file=sys.stderr)
        return 130
