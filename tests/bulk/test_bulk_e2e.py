"""``python -m backend bulk`` against the real Label Studio 1.23.2 on a local Ray with 2
workers: 8 tasks of both forms (one with a corrupt frame, one with only a draft, two without
prompts). The tests run in order and build on each other: the first run, a rerun that skips,
changed prompts, a worker killed mid-task, the command line."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter

import pytest

from backend.bulk.records import Outcome
from backend.bulk.runner import BulkRun, RunOptions
from backend.ls.batch import SIGNATURE_KEY, prediction_signature
from tests.bulk.harness import BulkLS, annotate, click

pytestmark = pytest.mark.e2e


def _ours(bulk: BulkLS, task_id: int, version: str) -> list[dict]:
    return [p for p in bulk.predictions(task_id) if p.get("model_version") == version]


def _run(bulk: BulkLS, project, **options) -> tuple[BulkRun, object]:
    run = BulkRun(bulk.settings(), project.config, project.project_id,
                  RunOptions(workers=2, **options))  # fmt: skip
    seen: list[int] = []
    run.on_result = lambda result, report: seen.append(result.task_id)
    report = run.run(project.tasks.values())
    run.stop_workers()
    counts = Counter(seen)
    assert all(n == 1 for n in counts.values()), f"a task ended twice: {counts}"
    assert set(counts) == set(project.tasks.values()), "every task ends exactly once"
    return run, report


@pytest.fixture(scope="module")
def first(bulk_ls: BulkLS, ray_local):
    """The first run of both projects."""
    return {name: _run(bulk_ls, getattr(bulk_ls, name))[1] for name in ("images", "videos")}


def test_first_run_every_task_done_or_failed_once(bulk_ls: BulkLS, first):
    images, videos = first["images"], first["videos"]
    print(f"\n{images.table()}\n{videos.table()}")  # shown with pytest -s
    t = bulk_ls.images.tasks
    outcome = {role: images.results[tid].outcome for role, tid in t.items()}
    assert outcome == {"car": Outcome.DONE, "swan": Outcome.DONE, "draft": Outcome.DONE,
                       "corrupt": Outcome.FAILED, "empty": Outcome.NO_PROMPTS}  # fmt: skip
    broken = images.results[t["corrupt"]]
    assert "frame 3" in broken.reason and "not a readable image" in broken.reason
    assert broken.attempts == 1, "an unreadable frame is not retried: it would fail again"
    assert images.results[t["draft"]].source == "draft"
    assert images.results[t["car"]].source == "annotation"
    v = bulk_ls.videos.tasks
    assert {r: videos.results[i].outcome for r, i in v.items()} == {
        "scooter": Outcome.DONE, "car": Outcome.DONE, "empty": Outcome.NO_PROMPTS}  # fmt: skip
    version = images.model_version
    assert version.startswith("tam-classical-")
    for project in (bulk_ls.images, bulk_ls.videos):
        report = first["images" if project is bulk_ls.images else "videos"]
        for role, tid in project.tasks.items():
            preds = _ours(bulk_ls, tid, version)
            if report.results[tid].outcome is Outcome.DONE:
                assert len(preds) == 1, (role, preds)
                (pred,) = preds
                assert prediction_signature(pred) == report.results[tid].signature
                assert pred["result"], role
            else:
                assert preds == [], f"{role}: a task without a result is not touched"
    shape = {r["type"] for tid in v.values() for p in _ours(bulk_ls, tid, version)
             for r in p["result"]}  # fmt: skip
    assert shape == {"videorectangle"}
    brush = _ours(bulk_ls, t["car"], version)[0]["result"]
    assert {r["type"] for r in brush} == {"brushlabels"}
    assert sorted({r["item_index"] for r in brush}) == list(range(6)), "a mask on every frame"
    assert SIGNATURE_KEY in brush[0]["meta"], "Label Studio kept the signature in the meta"


def test_same_masks_as_the_servers_batch_predict(bulk_ls: BulkLS, first, tmp_path):
    """The server's batch /predict of the same annotation gives the same regions."""
    from model import TrackAnythingModel

    tid = bulk_ls.images.tasks["swan"]
    task = bulk_ls.ls.client.get(f"/api/tasks/{tid}")
    settings = bulk_ls.settings(MODEL_DIR=str(tmp_path))
    model = TrackAnythingModel(settings)
    try:
        body = {"tasks": [task], "label_config": bulk_ls.images.config}
        (served,) = model.predict(body)["results"]
    finally:
        model.jobs.shutdown()
    version = first["images"].model_version
    (bulk,) = _ours(bulk_ls, tid, version)
    strip = [{k: v for k, v in r.items() if k != "meta"} for r in bulk["result"]]
    assert strip == served["result"]
    assert bulk["score"] == pytest.approx(served["score"])


def test_rerun_skips_the_done_tasks(bulk_ls: BulkLS, first):
    version = first["images"].model_version
    before = {tid: [p["id"] for p in _ours(bulk_ls, tid, version)]
              for tid in bulk_ls.images.tasks.values()}  # fmt: skip
    _, report = _run(bulk_ls, bulk_ls.images)
    t = bulk_ls.images.tasks
    for role in ("car", "swan", "draft"):
        assert report.results[t[role]].outcome is Outcome.SKIPPED, role
    assert report.results[t["corrupt"]].outcome is Outcome.FAILED
    assert report.results[t["empty"]].outcome is Outcome.NO_PROMPTS
    after = {tid: [p["id"] for p in _ours(bulk_ls, tid, version)] for tid in t.values()}
    assert after == before, "a skipped task keeps its prediction, nothing is written"


def test_changed_prompts_are_propagated_again(bulk_ls: BulkLS, first):
    t = bulk_ls.images.tasks
    version = first["images"].model_version
    (old,) = _ours(bulk_ls, t["swan"], version)
    annotate(bulk_ls.ls, t["swan"], [click("blackswan"), click("blackswan", frame=3)])
    _, report = _run(bulk_ls, bulk_ls.images)
    assert report.results[t["swan"]].outcome is Outcome.DONE
    assert report.results[t["car"]].outcome is Outcome.SKIPPED
    (new,) = _ours(bulk_ls, t["swan"], version)
    assert new["id"] != old["id"] and prediction_signature(new) != prediction_signature(old)
    assert len(new["result"]) == 6, "one mask per frame, keyframes 0 and 3"


def test_a_worker_killed_mid_task_does_not_lose_it(bulk_ls: BulkLS, first):
    """The worker that runs the car task is SIGKILLed right after the task reaches it; the
    task goes to another worker and ends done exactly once, with exactly one prediction."""
    t = bulk_ls.images.tasks
    victim, killed = t["car"], []

    def kill(task_id: int, attempt: int, worker) -> None:
        if task_id == victim and not killed and worker.pid > 0:
            os.kill(worker.pid, signal.SIGKILL)
            killed.append(worker.name)

    run = BulkRun(bulk_ls.settings(), bulk_ls.images.config, bulk_ls.images.project_id,
                  RunOptions(workers=2, force=True), on_dispatch=kill)  # fmt: skip
    ended: list[int] = []
    run.on_result = lambda result, report: ended.append(result.task_id)
    report = run.run(t.values())
    run.stop_workers()
    assert killed, "the victim's worker was killed"
    assert report.worker_restarts >= 1
    assert ended.count(victim) == 1
    result = report.results[victim]
    assert result.outcome is Outcome.DONE and result.worker != killed[0]
    assert len(_ours(bulk_ls, victim, report.model_version)) == 1
    assert report.results[t["corrupt"]].outcome is Outcome.FAILED
    assert sum(r.outcome is Outcome.DONE for r in report.results.values()) == 3


def test_command_line_rerun_writes_table_and_report(bulk_ls: BulkLS, first, tmp_path,
                                                    monkeypatch, capsys):  # fmt: skip
    from backend.cli import main

    for key, value in {"LABEL_STUDIO_URL": bulk_ls.ls.base_url,
                       "LABEL_STUDIO_API_KEY": bulk_ls.ls.pat, "ENGINE": "classical",
                       "MODEL_DIR": str(tmp_path / "m")}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    path = tmp_path / "report.json"
    code = main(["bulk", "--project", str(bulk_ls.videos.project_id), "--workers", "2",
                 "--report", str(path), "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    report = json.loads(path.read_text())
    assert report["counts"]["skipped"] == 2 and report["counts"]["no-prompts"] == 1
    assert report["counts"]["done"] == 0 and report["counts"]["failed"] == 0
    assert "skipped" in out and "no prompts (not touched)" in out


def test_ctrl_c_stops_new_tasks_and_leaves_nothing_half_written(bulk_ls: BulkLS, first):
    """Ctrl-C as the first task is handed out: that task finishes and is written whole, the
    others never start and are reported as not run."""
    t = bulk_ls.images.tasks
    pressed: list[int] = []

    def ctrl_c(task_id: int, attempt: int, worker) -> None:
        if not pressed:
            pressed.append(task_id)
            raise KeyboardInterrupt

    run = BulkRun(bulk_ls.settings(), bulk_ls.images.config, bulk_ls.images.project_id,
                  RunOptions(workers=2, force=True), on_dispatch=ctrl_c)  # fmt: skip
    report = run.run(t.values())
    run.stop_workers()
    (started,) = pressed
    assert report.interrupted
    assert report.results[started].outcome is Outcome.DONE
    others = [tid for tid in t.values() if tid != started]
    assert all(report.results[tid].outcome is Outcome.NOT_RUN for tid in others)
    (pred,) = _ours(bulk_ls, started, report.model_version)
    assert (
        len(pred["result"]) == 6 and prediction_signature(pred) == report.results[started].signature
    )


def _cli_error(bulk_ls: BulkLS, monkeypatch, capsys, key: str, project: int, *args: str,
               **env: str) -> tuple[int, str]:  # fmt: skip
    """``python -m backend bulk --project PROJECT --no-progress ARGS`` with ``env`` set: the
    exit code and standard error."""
    from backend.cli import main

    monkeypatch.setenv("LABEL_STUDIO_URL", bulk_ls.ls.base_url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", key)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(["bulk", "--project", str(project), "--no-progress", *args])
    return code, capsys.readouterr().err.strip()


def test_command_line_bad_key_and_wrong_project_are_one_line(bulk_ls: BulkLS, monkeypatch,
                                                             capsys):  # fmt: skip
    code, err = _cli_error(bulk_ls, monkeypatch, capsys, "not-a-token", 1)
    assert code == 2 and "refused LABEL_STUDIO_API_KEY" in err and len(err.splitlines()) == 1
    code, err = _cli_error(bulk_ls, monkeypatch, capsys, bulk_ls.ls.pat, 9999)
    assert code == 2 and err == "error: project 9999: not found in Label Studio (HTTP 404)"


def test_an_engine_the_workers_cannot_load_is_one_line(bulk_ls: BulkLS, first, monkeypatch,
                                                       capsys, tmp_path):  # fmt: skip
    for key in ("SAM_CHECKPOINT", "XMEM_CHECKPOINT"):
        monkeypatch.delenv(key, raising=False)
    code, err = _cli_error(bulk_ls, monkeypatch, capsys, bulk_ls.ls.pat,
                           bulk_ls.videos.project_id, "--report", str(tmp_path / "r.json"),
                           ENGINE="sam-xmem", MODEL_DIR=str(tmp_path))  # fmt: skip
    assert code == 2, err
    assert err == ("error: the workers could not start: ENGINE=sam-xmem needs SAM_CHECKPOINT "
                   "and XMEM_CHECKPOINT")  # fmt: skip
    assert not (tmp_path / "r.json").exists()


def test_workers_the_cluster_cannot_place_are_one_line(bulk_ls: BulkLS, first, monkeypatch,
                                                       capsys, tmp_path):  # fmt: skip
    """A GPU per worker on this GPU-less local Ray: the workers never start."""
    code, err = _cli_error(bulk_ls, monkeypatch, capsys, bulk_ls.ls.pat,
                           bulk_ls.videos.project_id, "--gpus-per-worker", "1",
                           "--start-timeout", "3", ENGINE="classical",
                           MODEL_DIR=str(tmp_path))  # fmt: skip
    assert code == 2, err
    assert err.startswith("error: the workers could not start: 2 of 2 workers were not ready "
                          "within 3 s")  # fmt: skip
    assert len(err.splitlines()) == 1
