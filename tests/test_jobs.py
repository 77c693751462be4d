"""Time budget, background completion, write-back, supersede, dedupe and crash recovery."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from backend.config import Settings
from backend.jobs import JobSpec, JobState, JobStore
from model import TrackAnythingModel
from tests.conftest import REPO, load_fixture, write_frames
from tests.fake_ls import FakeLabelStudio
from tests.fakes import fake_engine

CONFIG = load_fixture("20_")["label_config"]


def click_body(urls, task_id=1, x=33.0, frame=0):
    region = {
        "original_width": 320,
        "original_height": 240,
        "item_index": frame,
        "value": {"x": x, "y": 50.0, "keypointlabels": ["Object"]},
        "is_positive": True,
        "from_name": "kp",
        "to_name": "image",
        "type": "keypointlabels",
    }
    return {
        "tasks": [{"id": task_id, "data": {"frames": urls}}],
        "label_config": CONFIG,
        "params": {"context": {"result": [region]}},
    }


@pytest.fixture
def fake_ls():
    ls = FakeLabelStudio()
    yield ls
    ls.close()


def make_model(tmp_path, ls_url="", budget=0.3, delay=0.02, frames=40):
    urls = write_frames(tmp_path / "media", "clip", frames)
    settings = Settings(
        local_files_root=tmp_path / "media",
        model_dir=tmp_path / "md",
        predict_budget_s=budget,
        label_studio_url=ls_url,
        label_studio_api_key="legacy-token" if ls_url else "",
    )
    model = TrackAnythingModel(settings, engine_factory=lambda: fake_engine(delay_s=delay))
    return model, urls


def wait_for(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_fast_job_answers_in_full(tmp_path):
    model, urls = make_model(tmp_path, budget=10, delay=0, frames=6)
    pred = model.predict(click_body(urls))["results"][0]
    assert sorted(r["item_index"] for r in pred["result"]) == list(range(6))


def test_budget_gives_partial_answer_then_ls_gets_the_full_one(tmp_path, fake_ls):
    model, urls = make_model(tmp_path, ls_url=fake_ls.url, budget=0.3, delay=0.05, frames=40)
    t0 = time.monotonic()
    partial = model.predict(click_body(urls, task_id=7))["results"][0]
    assert time.monotonic() - t0 < 2.0, "answers within the budget"
    frames = sorted(r["item_index"] for r in partial["result"])
    assert 0 in frames, "the keyframe is always in the answer"
    assert 1 <= len(frames) < 40
    assert wait_for(lambda: len(fake_ls.for_task(7)) == 1)
    written = fake_ls.for_task(7)[0]
    assert sorted(r["item_index"] for r in written["result"]) == list(range(40))
    assert written["model_version"] == "tam-fake-test"
    assert wait_for(lambda: model.list_jobs()["jobs"][0]["status"] == "done")
    assert model.list_jobs()["jobs"][0]["frames_done"] == 40
    # the same click again: instant, complete, from the result cache
    t0 = time.monotonic()
    again = model.predict(click_body(urls, task_id=7))["results"][0]
    assert time.monotonic() - t0 < 0.5 and len(again["result"]) == 40


def test_rewrite_replaces_our_older_prediction(tmp_path, fake_ls):
    model, urls = make_model(tmp_path, ls_url=fake_ls.url, budget=0.1, delay=0.02, frames=20)
    model.predict(click_body(urls, task_id=3, x=30.0))
    assert wait_for(lambda: model.list_jobs()["jobs"][0]["status"] == "done")
    model.predict(click_body(urls, task_id=3, x=40.0))
    assert wait_for(
        lambda: (
            [j["status"] for j in model.list_jobs()["jobs"]][:1] == ["done"]
            and len(model.list_jobs()["jobs"]) == 2
        )
    )
    assert wait_for(lambda: len(fake_ls.for_task(3)) == 1), fake_ls.for_task(3)


def test_new_click_supersedes_the_running_job(tmp_path, fake_ls):
    model, urls = make_model(tmp_path, ls_url=fake_ls.url, budget=0.1, delay=0.05, frames=60)
    model.predict(click_body(urls, task_id=5, x=30.0))
    first = model.list_jobs()["jobs"][0]["id"]
    model.predict(click_body(urls, task_id=5, x=45.0))
    assert model.get_job(first)["status"] == "superseded"
    assert wait_for(lambda: len(fake_ls.for_task(5)) == 1, timeout=30)
    time.sleep(0.3)
    writes = fake_ls.for_task(5)
    assert len(writes) == 1
    region = next(r for r in writes[0]["result"] if r["item_index"] == 0)
    assert region["id"] == "tam-o1-f0"
    # the stale job never wrote: only one prediction exists and it came from the newer click
    states = {j["id"]: j["status"] for j in model.list_jobs()["jobs"]}
    assert states[first] == "superseded" and list(states.values()).count("done") == 1


def test_duplicate_requests_share_one_job(tmp_path):
    model, urls = make_model(tmp_path, budget=0.05, delay=0.05, frames=30)
    model.predict(click_body(urls, task_id=9))
    model.predict(click_body(urls, task_id=9))
    assert len(model.list_jobs()["jobs"]) == 1


def test_job_store_survives_reopen(tmp_path):
    store = JobStore(tmp_path / "j.sqlite3")
    spec = JobSpec(1, "1:k", ["a"], "<View/>", {}, ["A"], "v")
    store.add(JobState(id="x1", task_id=1, key="1:k"), spec)
    again = JobStore(tmp_path / "j.sqlite3")
    state, spec2 = again.get("x1")
    assert state.status == "queued" and spec2 == spec and again.active()[0][0].id == "x1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(tmp_path: Path, port: int, ls_url: str, **overrides: str) -> subprocess.Popen:
    """A backend subprocess on ``port`` (environment ``overrides`` on top), once healthy."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ENGINE": "tests.fakes:slow_engine",
        "TAM_FAKE_DELAY_S": "0.1",
        "MODEL_DIR": str(tmp_path / "md"),
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(tmp_path / "media"),
        "LABEL_STUDIO_URL": ls_url,
        "LABEL_STUDIO_API_KEY": "legacy-token",
        "PREDICT_BUDGET_S": "0.5",
        "LOG_LEVEL": "INFO",
        **overrides,
    }
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "_wsgi.py"), "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / f"server-{port}.log", "ab"),  # noqa: SIM115
    )
    assert wait_for(lambda: _healthy(port), timeout=60), (
        tmp_path / f"server-{port}.log"
    ).read_text()
    return proc


def _healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_kill_9_mid_job_then_restart_resumes_and_writes_once(tmp_path, fake_ls):
    urls = write_frames(tmp_path / "media", "clip", 60)
    port = _free_port()
    server = _start_server(tmp_path, port, fake_ls.url)
    try:
        resp = requests.post(f"http://127.0.0.1:{port}/predict", json=click_body(urls, task_id=11))
        assert resp.status_code == 200
        assert len(resp.json()["results"][0]["result"]) < 60, "partial answer"
        jobs = requests.get(f"http://127.0.0.1:{port}/jobs").json()["jobs"]
        assert jobs[0]["status"] == "running"
        job_id = jobs[0]["id"]
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    assert fake_ls.for_task(11) == [], "nothing half-written in Label Studio"
    server = _start_server(tmp_path, port, fake_ls.url)
    try:
        url = f"http://127.0.0.1:{port}/jobs/{job_id}"
        assert wait_for(lambda: requests.get(url).json()["status"] == "done", timeout=60)
        state = requests.get(url).json()
        assert state["frames_done"] == 60 and "resumed" in state["error"]
        written = fake_ls.for_task(11)
        assert len(written) == 1 and len(written[0]["result"]) == 60
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'tam_jobs{status="done"} 1' in metrics
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


def test_jobs_endpoint_404(tmp_path):
    from backend.server.app import create_app

    model, _ = make_model(tmp_path)
    client = create_app(model.settings, model, metrics=model.metrics).test_client()
    assert client.get("/jobs/nope").status_code == 404
    assert client.get("/jobs").get_json() == {"jobs": []}
    assert json.loads(client.get("/jobs").data)["jobs"] == []


def test_twenty_concurrent_clicks_on_different_tasks(tmp_path):
    """All answered within the budget (partial or full) or refused with a clear 503 status."""
    from concurrent.futures import ThreadPoolExecutor

    from backend.server.app import create_app

    model, urls = make_model(tmp_path, budget=2.0, delay=0.01, frames=30)
    client = create_app(model.settings, model, metrics=model.metrics).test_client()

    def one(task_id):
        t0 = time.monotonic()
        resp = client.post("/predict", json=click_body(urls, task_id=task_id))
        return resp.status_code, resp.get_json(), time.monotonic() - t0

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(one, range(100, 120)))
    for status, body, elapsed in answers:
        assert elapsed < 2.0 + 1.5, elapsed
        if status == 200:
            assert body["results"][0]["result"], "at least the keyframe"
        else:
            assert status == 503 and "busy" in body["errors"][0]
    assert sum(s == 200 for s, _, _ in answers) >= 1
    assert wait_for(
        lambda: all(j["status"] in ("done", "superseded") for j in model.list_jobs()["jobs"]),
        timeout=60,
    )
