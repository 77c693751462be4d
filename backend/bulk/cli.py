"""``python -m backend bulk --project ID``: propagate every prompted task of a Label Studio
project on Ray and write one prediction per task (docs/bulk.md).

Exit status: 0 when no task failed, 1 when some did, 2 when the run could not start (Label
Studio unreachable, token refused, no such project, engine not loadable), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

from backend.config import ConfigError, Settings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", type=int, required=True, metavar="ID",
                        help="Label Studio project (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY)")  # fmt: skip
    parser.add_argument("--address", metavar="HOST:PORT",
                        help="an existing Ray cluster ('auto': the one this node belongs to); "
                        "default: a local cluster on this machine")  # fmt: skip
    parser.add_argument("--workers", type=_positive_int, default=2, metavar="N",
                        help="worker actors, one engine each (default 2)")  # fmt: skip
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="F",
                        help="GPUs per worker, e.g. 1 or 0.5 (default 0: CPU; >0 sets "
                        "DEVICE=cuda unless DEVICE says otherwise)")  # fmt: skip
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="F",
                        help="CPUs per worker (default 1; also its OpenCV/torch threads)")  # fmt: skip
    parser.add_argument("--retries", type=int, default=1, metavar="N",
                        help="further attempts of a task whose failure may be transient "
                        "(timeouts, Label Studio unreachable; default 1)")  # fmt: skip
    parser.add_argument("--task", type=int, action="append", metavar="ID", dest="tasks",
                        help="only these tasks (repeatable; default: the whole project)")  # fmt: skip
    parser.add_argument("--force", action="store_true",
                        help="recompute tasks whose prediction already carries the same "
                        "prompts and model version")  # fmt: skip
    parser.add_argument("--report", type=Path, metavar="FILE",
                        help="the JSON report (default bulk-report-<project>.json)")  # fmt: skip
    parser.add_argument("--start-timeout", type=float, default=600.0, metavar="S",
                        help="the longest the workers may take to be placed and to load their "
                        "engines (default 600 s)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(args: argparse.Namespace) -> int:
    from backend.ls.client import LabelStudioConnection, LabelStudioError, ProjectAPI
    from backend.ls.labelconfig import LabelConfigError
    from backend.ls.tasks import parse_project

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        return _fail(str(exc))
    if args.gpus_per_worker > 0 and settings.device == "cpu" and "DEVICE" not in os.environ:
        settings = dataclasses.replace(settings, device="cuda")
    api = ProjectAPI(LabelStudioConnection(settings), verify=settings.verify_ssl)
    try:
        api.check()
        config = api.label_config(args.project)
        parse_project(config, settings.label_config_max_bytes)  # a clear error before Ray
        task_ids = args.tasks or api.task_ids(args.project)
    except (LabelStudioError, LabelConfigError, ValueError) as exc:
        return _fail(str(exc))
    report_path = args.report or Path(f"bulk-report-{args.project}.json")
    if not task_ids:
        print(f"project {args.project} has no tasks")
        return 0
    return _run(args, settings, config, task_ids, report_path)


def _run(args, settings: Settings, config: str, task_ids: list[int], report_path: Path) -> int:
    try:
        import ray
    except ImportError:
        return _fail("python -m backend bulk needs Ray: pip install -r requirements-bulk.txt")

    from backend.bulk.records import Outcome
    from backend.bulk.runner import BulkRun, RunOptions, WorkerStartError, connect
    from backend.engine import EngineError

    options = RunOptions(workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                         cpus_per_worker=args.cpus_per_worker, retries=max(0, args.retries),
                         force=args.force, start_timeout_s=args.start_timeout)  # fmt: skip
    try:
        cpus = None if args.address else max(os.cpu_count() or 1,
                                             int(args.workers * args.cpus_per_worker + 0.999))  # fmt: skip
        address = connect(args.address, num_cpus=cpus)
    except Exception as exc:  # Ray's own errors: no cluster there, version mismatch
        return _fail(f"cannot start or join the Ray cluster: {' '.join(str(exc).split())[:300]}")
    bar = None
    try:
        run = BulkRun(settings, config, args.project, options)
        run.report.address = address
        try:
            run.start_workers()
        except (EngineError, WorkerStartError, ray.exceptions.RayError) as exc:
            return _fail(f"the workers could not start: {_cause(exc)}")
        log.info("project %s: %d task(s) on %d worker(s) (%s)", args.project, len(task_ids),
                 args.workers, address)  # fmt: skip
        bar = None if args.no_progress else _progress_bar(len(task_ids))
        if bar is not None:
            run.on_result = _updater(bar, time.monotonic())
        report = run.run(task_ids)
        run.stop_workers()
    finally:
        if bar is not None:
            bar.close()
        if address != "existing":
            ray.shutdown()
    report.write(report_path)
    print(report.table())
    print(f"report: {report_path}")
    if report.interrupted:
        return 130
    return 1 if report.by_outcome(Outcome.FAILED) else 0


def _cause(exc: BaseException) -> str:
    """The innermost message of a Ray error (an actor's __init__ raised EngineError...)."""
    text = " ".join(str(exc).split())
    for marker in ("EngineError: ", "Error: "):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
            break
    return text[:300]


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="task", dynamic_ncols=True, file=sys.stderr)


def _updater(bar, t0: float):
    def update(result, report) -> None:
        elapsed = max(time.monotonic() - t0, 1e-9)
        counts = report.counts()
        bar.set_postfix_str(f"{report.frames / elapsed:.1f} frames/s done={counts.get('done', 0)} "
                            f"skipped={counts.get('skipped', 0)} "
                            f"failed={counts.get('failed', 0)}", refresh=False)  # fmt: skip
        bar.update(1)

    return update
