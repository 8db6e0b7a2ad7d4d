"""`python -m landscape_lib COMMAND ...`: train, train-all, list, runs, export, compact, analyze.

User errors (unknown names, bad values or files, missing data, unwritable store) print one line
starting with `error:` and exit with status 2, before anything is written. `train` and
`train-all` exit with 1 when a run or a scheduled analysis was left unfinished (each says why
in one `error:` line); running the same command again resumes them.
"""
from __future__ import annotations

import argparse
import sys

from .errors import LandscapeError
from .locations import DEFAULT_GRID
from .store.queries import RUN_FILTERS


def positive_int(text: str, also: str = "") -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer{also}, not {text!r}")
    return int(text)


def jobs_arg(text: str) -> str | int:
    """`-j`: "auto" or a positive integer."""
    return text if text == "auto" else positive_int(text, " or 'auto'")


def nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", type=nonempty,
                   help="store folder (default: $LANDSCAPE_STORE or runs/store)")


def _run_args(p: argparse.ArgumentParser) -> None:
    _store_args(p)
    p.add_argument("--data-root", help="data folder (default: $LANDSCAPE_DATA or runs/data)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1 ...")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _amount(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _backend_args(p: argparse.ArgumentParser) -> None:
    """`--backend` and the Ray backend's options (checked before anything is written)."""
    g = p.add_argument_group("backend (README: Several machines and GPUs)")
    g.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: processes on this machine (default); ray: one Ray task per run "
                        "on a Ray cluster")
    g.add_argument("--address", help="Ray cluster: auto or host:port (default: $RAY_ADDRESS, "
                                     "else a new Ray instance on this machine)")
    g.add_argument("--gpus-per-run", type=_amount, metavar="N",
                   help="GPUs per run, a fraction shares one (default: from the model's size)")
    g.add_argument("--cpus-per-run", type=_amount, metavar="N",
                   help="CPUs (and PyTorch threads) per run (default 1)")
    g.add_argument("--max-retries", type=int, metavar="N",
                   help="retries of a run whose worker or node dies (default 3)")
    g.add_argument("--lock-wait", type=_amount, metavar="SECONDS",
                   help="how long a retried run waits for the lock a dead node left on the "
                        "shared filesystem (default 150)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m landscape_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one run from key=value overrides")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="RunConfig fields, e.g. arch=vit arch_options.patch_size=4 lr=3e-4")
    p.add_argument("--config", help="a TOML file of RunConfig fields, applied before overrides")
    _run_args(p)

    p = sub.add_parser("train-all", help="train every run of a grid file (finished runs skipped)")
    p.add_argument("grid", nargs="?", default=str(DEFAULT_GRID))
    p.add_argument("-j", "--jobs", default="auto", type=jobs_arg,
                   help="parallel runs (default auto: one per GPU, 1 without GPUs); more than "
                        "the runs left to train starts one worker per run")
    p.add_argument("--epochs", type=positive_int, help="override every run's epochs")
    p.add_argument("--study", action="append", help="only this study (repeatable)")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="key=value",
                   help="override a field in every run")
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    _run_args(p)
    _backend_args(p)

    p = sub.add_parser("list", help="list registry entries")
    p.add_argument("what", nargs="?", default="all",
                   choices=["all", "architectures", "initializers", "optimizers", "datasets",
                            "analyses"])

    p = sub.add_parser("runs", help="list runs in the store, filtered")
    for col in RUN_FILTERS:
        p.add_argument(f"--{col}", action="append", type=int if col == "seed" else str,
                       help=f"keep runs with this {col} (repeatable)")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    _store_args(p)

    p = sub.add_parser("export", help="write a table of the store as CSV")
    p.add_argument("table", help="runs, epochs, layers, hessian_eigs, surface_points, ...")
    p.add_argument("--run", action="append", help="only these run ids")
    p.add_argument("-o", "--out", help="output file (default: stdout)")
    _store_args(p)

    p = sub.add_parser("compact", help="fold finished runs' part files into a few large "
                                       "files per table (readers and writers carry on)")
    p.add_argument("--min-age", type=float, default=60.0, metavar="SECONDS",
                   help="only parts untouched this long (default 60)")
    _store_args(p)

    p = sub.add_parser("analyze", help="run analyses on a stored run's checkpoint")
    p.add_argument("run", help="run id (a unique prefix is enough)")
    p.add_argument("--epoch", default="last", help="checkpoint epoch, or 'last'")
    p.add_argument("--what", default="hessian,surface",
                   help="comma-separated analyses (see `list analyses`)")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="key=value",
                   help="analysis parameter, e.g. samples=256 grid=21")
    p.add_argument("--progress-file", help="write JSON-lines progress here (for the dashboard)")
    p.add_argument("--gpus", type=int, default=1,
                   help="processes, one per GPU, for the Hessian (gloo processes on a CPU)")
    _run_args(p)

    p = sub.add_parser("analyze-all", help="run the [analyses] of a grid file on its runs")
    p.add_argument("grid", nargs="?", default=str(DEFAULT_GRID))
    p.add_argument("--epochs", type=positive_int, help="the same override used for train-all")
    p.add_argument("--study", action="append")
    _run_args(p)
    _backend_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import commands
    try:
        return getattr(commands, args.command.replace("-", "_"))(args) or 0
    except LandscapeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        return 130
