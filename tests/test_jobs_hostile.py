"""Jobs under hostile conditions: kill -9 with instant restarts, an older job finishing after a
newer one, several processes resuming one store, a corrupt or vanished store."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from backend.config import Settings
from backend.jobs import JobManager, JobSpec, JobState, JobStatus, JobStore
from backend.ls.client import LabelStudioConnection, replace_prediction
from backend.server.app import create_app
from tests.conftest import REPO, write_frames
from tests.fake_ls import FakeLabelStudio
from tests.test_jobs import _free_port, _start_server, click_body, make_model, wait_for

log = logging.getLogger(__name__)
FINAL = {s.value for s in (JobStatus.DONE, JobStatus.FAILED, JobStatus.SUPERSEDED)}


@pytest.fixture
def fake_ls():
    ls = FakeLabelStudio()
    yield ls
    ls.close()


def _spec(task_id: int | None, key: str) -> JobSpec:
    return JobSpec(task_id, key, ["a"], "<View/>", {}, ["A"], "v", {"key": {}, "prompts": {}})


# ---------------------------------------------------------------------- kill -9, restart at once
def _jobs(port: int) -> list[dict]:
    return requests.get(f"http://127.0.0.1:{port}/jobs", timeout=5).json()["jobs"]


def _job(port: int, job_id: str) -> dict:
    return requests.get(f"http://127.0.0.1:{port}/jobs/{job_id}", timeout=5).json()


def _resumed_from(job: dict, pid: int) -> bool:
    return job["status"] in FINAL or f"was pid {pid}" in (job["error"] or "")


def test_kill_9_and_restart_within_a_second_ten_times(tmp_path, fake_ls):
    """Each interrupted job is resumed although the new server starts before the killed one is
    even reaped; Label Studio ends with the newest click's prediction only, also after older
    jobs were written and newer clicks came between restarts."""
    urls = write_frames(tmp_path / "media", "clip", 40)
    env = {"TAM_FAKE_DELAY_S": "0.05", "PREDICT_BUDGET_S": "0.3"}  # a job takes ~2 s
    # click: a new click, killed while its job runs; again: killed as soon as the resumed job
    # runs (interrupted twice); settle: the resumed job writes to LS, then a new click
    schedule = ["click", "click", "again", "settle", "click", "again", "click", "settle"]
    schedule += ["click", "click"]
    port = _free_port()
    server = _start_server(tmp_path, port, fake_ls.url, **env)
    newest, interrupted, t0, resume_s = None, 0, time.monotonic(), []
    try:
        for step, action in enumerate(schedule):
            if action == "settle":
                assert wait_for(lambda p=port, j=newest: _job(p, j)["status"] == "done", timeout=30)
                assert len(fake_ls.for_task(11)) == 1
            if action in ("click", "settle"):
                body = click_body(urls, task_id=11, x=20.0 + 3 * step)
                resp = requests.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=30)
                assert resp.status_code == 200, resp.text
                newest = _jobs(port)[0]["id"]
            interrupted += _job(port, newest)["status"] in ("queued", "running")
            server.send_signal(signal.SIGKILL)  # restarted at once, before it is reaped
            killed, port, t_kill = server, _free_port(), time.monotonic()
            server = _start_server(tmp_path, port, fake_ls.url, **env)
            assert wait_for(
                lambda p=port, j=newest, k=killed.pid: _resumed_from(_job(p, j), k), timeout=20
            ), _job(port, newest)
            resume_s.append(time.monotonic() - t_kill)
            killed.wait(timeout=10)
        assert wait_for(lambda: all(j["status"] in FINAL for j in _jobs(port)), timeout=30), [
            (j["id"], j["status"]) for j in _jobs(port)
        ]
        jobs = {j["id"]: j for j in _jobs(port)}
        last = jobs[newest]
        assert last["status"] == "done" and last["frames_done"] == 40, last
        written = fake_ls.for_task(11)
        assert [p["id"] for p in written] == [last["ls_prediction_id"]], (written, last)
        assert len(written[0]["result"]) == 40
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
    logs = "".join(p.read_text() for p in tmp_path.glob("server-*.log"))
    resumed = logs.count("resuming after an interrupted run")
    failed = sum(j["status"] == "failed" for j in jobs.values())
    log.info("%d kill -9 restarts: %d jobs interrupted, %d resumed, %d failed; kill to resumed"
             " %.1f-%.1fs; %d jobs in %.1fs", len(schedule), interrupted, resumed, failed,
             min(resume_s), max(resume_s), len(jobs), time.monotonic() - t0)  # fmt: skip
    assert resumed == interrupted >= 8 and failed == 0


# ---------------------------------------------------------------------- an older click never wins
def test_an_older_job_finishing_after_a_newer_one_does_not_overwrite_it(tmp_path):
    """Two processes' managers on one store: the first click's job ends after the second's."""
    release = threading.Event()
    writes: list[str] = []

    def runner(job, progress):
        job.state.deliver_to_ls = True  # both answered partially
        if job.spec.key == "older":
            assert release.wait(10)
        return {"result": [job.spec.key], "score": 1.0}

    def writer(spec, prediction, is_current=lambda: True):
        if not is_current():
            return None
        writes.append(spec.key)
        return len(writes)

    path = tmp_path / "jobs.sqlite3"
    first = JobManager(JobStore(path), runner, writer=writer)
    second = JobManager(JobStore(path), runner, writer=writer)
    older = first.submit(_spec(3, "older"))
    newer = second.submit(_spec(3, "newer"))
    assert newer.finished.wait(10) and writes == ["newer"]
    release.set()
    assert older.finished.wait(10)
    assert writes == ["newer"], "the older click's prediction replaced the newer one"
    stored, _ = JobStore(path).get(older.state.id)
    assert stored.status is JobStatus.SUPERSEDED and newer.state.id in stored.error


def test_a_running_job_stops_when_another_process_takes_a_newer_click(tmp_path):
    stop = threading.Event()

    def runner(job, progress):
        job.state.frames_total = 100
        for i in range(100):  # bounded: 100 × 50 ms
            if job.cancel.is_set():
                break
            job.state.frames_done = i
            progress()
            time.sleep(0.05)
        stop.set()
        return {"result": [], "score": 0.0}

    path = tmp_path / "jobs.sqlite3"
    older = JobManager(JobStore(path), runner).submit(_spec(8, "older"))
    time.sleep(0.2)
    JobManager(JobStore(path), lambda job, progress: {"result": []}).submit(_spec(8, "newer"))
    assert stop.wait(5) and older.finished.wait(5)
    assert older.state.status is JobStatus.SUPERSEDED and older.state.frames_done < 60


def _ls_add(fake_ls: FakeLabelStudio, task: int, model_version: str) -> int:
    """A prediction written to the fake Label Studio by someone else."""
    with fake_ls.lock:
        pid = fake_ls.next_id
        fake_ls.next_id += 1
        fake_ls.predictions[pid] = {"id": pid, "task": task, "model_version": model_version}
    return pid


def test_an_orphaned_job_is_not_resumed_over_a_newer_click(tmp_path):
    """The crash case: an older job left running by a dead process, a newer one done since."""
    store = JobStore(tmp_path / "jobs.sqlite3")
    older = JobState(
        id="older", task_id=5, key="a", status=JobStatus.RUNNING, owner=uuid.uuid4().hex
    )
    store.add(older, _spec(5, "a"))
    newer = JobState(
        id="newer", task_id=5, key="b", status=JobStatus.DONE, created_at=time.time() + 1
    )
    store.add(newer, _spec(5, "b"))
    writes: list[str] = []

    def writer(spec, prediction, is_current=lambda: True):
        writes.append(spec.key)
        return 1

    manager = JobManager(store, lambda job, progress: {"result": []}, writer=writer)
    assert manager.resume_interrupted() == []
    state, _ = store.get("older")
    assert writes == [] and state.status is JobStatus.SUPERSEDED and "newer" in state.error


def test_replace_prediction_deletes_only_older_predictions(fake_ls):
    settings = Settings(label_studio_url=fake_ls.url, label_studio_api_key="legacy-token")
    conn = LabelStudioConnection(settings)
    pred = {"result": [], "score": 0.5}
    old = replace_prediction(conn, 4, pred, model_version="v")
    # a newer request came in while ours was created: ours is withdrawn, nothing deleted
    answers = iter([True, False])
    assert (
        replace_prediction(conn, 4, pred, model_version="v", is_current=lambda: next(answers))
        is None
    )
    assert [p["id"] for p in fake_ls.for_task(4)] == [old]
    # a newer job's prediction lands between our create and our delete: it is kept
    newer: list[int] = []

    def check() -> bool:
        if checks.pop():
            newer.append(_ls_add(fake_ls, 4, "v"))
        return True

    checks = [True, False]  # popped from the end: the 2nd check adds the newer prediction
    ours = replace_prediction(conn, 4, pred, model_version="v", is_current=check)
    assert sorted(p["id"] for p in fake_ls.for_task(4)) == [ours, newer[0]], "old gone, newer kept"
    assert replace_prediction(conn, 4, pred, model_version="v", is_current=lambda: False) is None
    assert len(fake_ls.for_task(4)) == 2


# ---------------------------------------------------------------------- liveness and claiming
_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import backend.jobs as jobs
    jobs.JobManager(jobs.JobStore(Path(sys.argv[1])), lambda job, progress: {})
    print(jobs.PROCESS_ID, flush=True)
    time.sleep(30)
    """
)


def _python(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )


def test_a_job_of_a_live_process_is_left_alone_and_taken_over_once_it_is_killed(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    holder = _python(_HOLDER, str(path))
    try:
        owner = holder.stdout.readline().strip()
        store = JobStore(path)
        state = JobState(id="j1", task_id=1, key="k", status=JobStatus.RUNNING, owner=owner)
        state.pid = holder.pid
        store.add(state, _spec(1, "k"))
        ran = threading.Event()
        manager = JobManager(store, lambda job, progress: ran.set() or {})
        assert manager.resume_interrupted() == [], "its owner still runs"
        holder.send_signal(signal.SIGKILL)  # not reaped: a zombie with its pid
        assert wait_for(lambda: manager.resume_interrupted() == ["j1"], timeout=5)
        assert ran.wait(5) and not (path.parent / "jobs.locks" / f"{owner}.lock").exists()
    finally:
        holder.kill()
        holder.wait(timeout=10)


_RESUMER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import backend.jobs as jobs
    manager = jobs.JobManager(jobs.JobStore(Path(sys.argv[1])), lambda job, progress: {},
                              workers=2)
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
    print(json.dumps(manager.resume_interrupted()), flush=True)
    """
)


def test_two_processes_resume_each_orphaned_job_exactly_once(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    dead = uuid.uuid4().hex
    ids = {f"j{k}" for k in range(30)}
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)  # its pid no longer runs
    for k in range(30):
        state = JobState(id=f"j{k}", task_id=k, key=f"k{k}", status=JobStatus.RUNNING, owner=dead)
        state.pid = gone.pid
        store.add(state, _spec(k, f"k{k}"))
    store.add(JobState(id="bad", task_id=99, key="x", owner=dead), _spec(99, "x"))
    with sqlite3.connect(path) as c:
        c.execute("UPDATE jobs SET spec='{not json' WHERE id='bad'")
    start = time.time() + 1.5  # both scan at once
    procs = [_python(_RESUMER, str(path), str(start)) for _ in range(2)]
    outs = [set(json.loads(p.communicate(timeout=60)[0].splitlines()[-1])) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert not outs[0] & outs[1], "a job resumed twice"
    assert outs[0] | outs[1] == ids
    states = {s.id: s for s in store.list(limit=100)}
    assert all(states[i].status is JobStatus.DONE for i in ids)
    assert states["bad"].status is JobStatus.FAILED and "unreadable" in states["bad"].error


# ---------------------------------------------------------------------- store failures
@pytest.mark.parametrize("damage", ["not-a-database", "damaged-page"])
def test_a_corrupt_store_at_boot_is_moved_aside(tmp_path, caplog, damage):
    db = tmp_path / "md" / "jobs.sqlite3"
    db.parent.mkdir()
    if damage == "not-a-database":
        db.write_bytes(b"this is not a database\n" * 300)
        Path(f"{db}-wal").write_bytes(b"junk")
    else:
        store = JobStore(db)
        for k in range(200):
            store.add(JobState(id=f"j{k}", task_id=k, key="k" * 50), _spec(k, "k" * 500))
        data = bytearray(db.read_bytes())
        data[8192:12288] = b"\xff" * 4096
        db.write_bytes(bytes(data))
    damaged = db.read_bytes()
    with caplog.at_level(logging.ERROR, logger="backend.jobs"):
        model, urls = make_model(tmp_path, budget=5, delay=0, frames=6)
    aside = [p for p in db.parent.iterdir() if p.name.startswith("jobs.sqlite3.corrupt-")]
    main = [p for p in aside if p.name.count("-") == 1]
    assert len(main) == 1 and main[0].read_bytes() == damaged
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(db) in errors[0] and str(main[0]) in errors[0]
    assert "\n" not in errors[0]
    client = create_app(model.settings, model, metrics=model.metrics).test_client()
    assert client.get("/health").status_code == 200
    assert client.post("/predict", json=click_body(urls)).status_code == 200
    assert len(client.get("/jobs").get_json()["jobs"]) == 1


def test_model_dir_deleted_while_serving_is_a_503_until_it_is_back(tmp_path):
    model, urls = make_model(tmp_path, budget=5, delay=0, frames=6)
    client = create_app(model.settings, model, metrics=model.metrics).test_client()
    assert client.post("/predict", json=click_body(urls, x=30.0)).status_code == 200
    shutil.rmtree(tmp_path / "md")
    health = client.get("/health")
    assert health.status_code == 503 and health.get_json()["status"] == "ERROR"
    error = health.get_json()["error"]
    assert str(tmp_path / "md" / "jobs.sqlite3") in error and "MODEL_DIR" in error, error
    resp = client.post("/predict", json=click_body(urls, x=40.0))
    assert resp.status_code == 503 and "job store" in resp.get_json()["errors"][0]
    assert client.get("/jobs").status_code == 503
    (tmp_path / "md").mkdir()  # the volume is back: recovered without a restart
    assert client.get("/health").status_code == 200
    assert client.post("/predict", json=click_body(urls, x=50.0)).status_code == 200


def test_store_file_deleted_while_serving_is_created_again(tmp_path, caplog):
    model, urls = make_model(tmp_path, budget=5, delay=0, frames=6)
    client = create_app(model.settings, model, metrics=model.metrics).test_client()
    assert client.post("/predict", json=click_body(urls, x=30.0)).status_code == 200
    for suffix in ("", "-wal", "-shm"):
        Path(f"{tmp_path / 'md' / 'jobs.sqlite3'}{suffix}").unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING, logger="backend.jobs"):
        assert client.post("/predict", json=click_body(urls, x=40.0)).status_code == 200
    assert any("created it again" in r.getMessage() for r in caplog.records)
    assert client.get("/health").status_code == 200
    assert len(client.get("/jobs").get_json()["jobs"]) == 1


def test_disk_full_is_a_503_with_the_fix_until_a_write_works(tmp_path, monkeypatch):
    model, urls = make_model(tmp_path, budget=5, delay=0, frames=6)
    client = create_app(model.settings, model, metrics=model.metrics).test_client()

    def full(create=False):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(model.jobs.store, "_connect", full)
    resp = client.post("/predict", json=click_body(urls, x=30.0))
    assert resp.status_code == 503 and "disk" in resp.get_json()["errors"][0]
    health = client.get("/health")
    assert health.status_code == 503 and "free disk space" in health.get_json()["error"]
    monkeypatch.undo()
    assert client.get("/health").status_code == 200
    assert client.post("/predict", json=click_body(urls, x=40.0)).status_code == 200
