"""``make demo`` end to end: ``python -m backend.demo`` as a user runs it, checked through LS's API.

Run 1 waits for the ready file, then checks what the demo printed and set up (the login, the
project with our labeling config, the task with its frames, the connected interactive backend),
and stops it with SIGINT (Ctrl-C). Run 2, on the same data directory, must reuse everything:
same ids, same login, no duplicate rows in Label Studio's database.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import ls_harness as h
import pytest
import requests

from backend import demo

pytestmark = pytest.mark.e2e

FRAMES = 30
# No database template: the e2e template holds the e2e user, not the demo's, and the demo must
# create its own user on a fresh database as a new user's first run does (up to ~2 min here).
READY_TIMEOUT_S = 420.0


def _skip_if_opted_out() -> None:
    if os.environ.get("TAM_SKIP_E2E") == "1":
        pytest.skip("TAM_SKIP_E2E=1: end-to-end tests against Label Studio disabled on request")


def _command(
    data_dir: Path, ls_port: int, backend_port: int, ready: Path, *extra: str
) -> list[str]:
    return [
        str(h.PROJECT_PYTHON),
        "-m",
        "backend.demo",
        "--data-dir",
        str(data_dir),
        "--ls-port",
        str(ls_port),
        "--backend-port",
        str(backend_port),
        "--frames",
        str(FRAMES),
        "--ready-file",
        str(ready),
        *extra,
    ]


def _start(cmd: list[str], out: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as fh:
        return subprocess.Popen(
            cmd, cwd=h.REPO_ROOT, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


def _wait_ready(proc: subprocess.Popen[bytes], ready: Path, out: Path) -> dict:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.exists():
        if proc.poll() is not None:
            pytest.fail(f"demo exited with {proc.returncode} before ready:\n{h.log_tail(out)}")
        if time.monotonic() > deadline:
            pytest.fail(f"demo not ready after {READY_TIMEOUT_S:.0f} s:\n{h.log_tail(out)}")
        time.sleep(0.5)
    return json.loads(ready.read_text())


def _printed(out: Path) -> dict[str, str]:
    """The ``Open:``, ``Email:`` and ``Password:`` lines the demo printed for the user."""
    text = out.read_text(errors="replace")
    found = dict(re.findall(r"^\s+(Open|Email|Password):\s+(\S+)\s*$", text, re.MULTILINE))
    assert set(found) == {"Open", "Email", "Password"}, f"demo output lacks the login:\n{text}"
    return found


def _stop(proc: subprocess.Popen[bytes], out: Path) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"demo did not stop within 60 s of SIGINT:\n{h.log_tail(out)}")


def _rows(db: Path, title: str) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        (pid,) = con.execute("SELECT id FROM project WHERE title = ?", (title,)).fetchone()
        counts = {
            "projects": "SELECT COUNT(*) FROM project WHERE title = ?",
            "tasks": "SELECT COUNT(*) FROM task WHERE project_id = ?",
            "ml_backends": "SELECT COUNT(*) FROM ml_mlbackend WHERE project_id = ?",
            "storages": "SELECT COUNT(*) FROM io_storages_localfilesimportstorage WHERE project_id = ?",
            "webhooks": "SELECT COUNT(*) FROM webhook WHERE project_id = ?",
        }
        out = {}
        for name, sql in counts.items():
            arg = title if name == "projects" else pid
            out[name] = int(con.execute(sql, (arg,)).fetchone()[0])
    con.close()
    return out


def _check_running_demo(info: dict, printed: dict[str, str], data_dir: Path) -> None:
    base = info["label_studio_url"]
    assert printed["Open"] == info["task_url"]
    # The printed login works in the browser's login form, and the task page opens with it.
    creds = h.LSCredentials(printed["Email"], printed["Password"])
    session = demo.login_session(base, creds)
    who = session.get(f"{base}/api/current-user/whoami", timeout=30)
    assert who.ok and who.json()["email"] == printed["Email"]
    assert session.get(printed["Open"], timeout=60).status_code == 200

    pat = json.loads((data_dir / "credentials.json").read_text())["pat"]
    client = h.LSClient(base, pat)
    projects = [
        p
        for p in client.get("/api/projects", params={"page_size": 100})["results"]
        if p["title"] == demo.DEMO_PROJECT_TITLE
    ]
    assert [p["id"] for p in projects] == [info["project_id"]]
    shipped = (h.REPO_ROOT / "docs" / "labeling-config.xml").read_text()
    assert projects[0]["label_config"].strip() == shipped.strip()

    tasks = client.get("/api/tasks", params={"project": info["project_id"]})["tasks"]
    assert [t["id"] for t in tasks] == [info["task_id"]]
    frames = tasks[0]["data"]["frames"]
    names = sorted(p.name for p in (demo.DAVIS_DIR / "JPEGImages/480p/blackswan").glob("*.jpg"))
    assert frames == [h.local_file_url(f"blackswan/{n}") for n in names[:FRAMES]]
    for url in (frames[0], frames[-1]):  # Label Studio serves them from the demo's Local Storage
        r = client.request("GET", url)
        assert r.status_code == 200 and r.content[:2] == b"\xff\xd8", url

    backends = client.get("/api/ml", params={"project": info["project_id"]})
    assert [b["id"] for b in backends] == [info["ml_backend_id"]]
    ml = client.get(f"/api/ml/{info['ml_backend_id']}")
    assert ml["state"] == "CO", ml.get("error_message")
    assert ml["is_interactive"] is True
    assert ml["url"] == info["backend_url"]
    assert requests.get(f"{info['backend_url']}/health", timeout=10).json()["status"] == "UP"


def test_demo_ready_then_idempotent(tmp_path: Path) -> None:
    _skip_if_opted_out()
    h.ensure_label_studio()
    data_dir = tmp_path / "demo"
    ls_port, backend_port = h.free_port(), h.free_port()
    while backend_port == ls_port:
        backend_port = h.free_port()

    ready1, out1 = tmp_path / "ready1.json", tmp_path / "run1.out"
    proc = _start(_command(data_dir, ls_port, backend_port, ready1), out1)
    try:
        info = _wait_ready(proc, ready1, out1)
        printed = _printed(out1)
        _check_running_demo(info, printed, data_dir)
    finally:
        code = _stop(proc, out1)
    assert code == 0, h.log_tail(out1)
    assert demo.port_is_free(ls_port) and demo.port_is_free(backend_port), (
        "a server outlived Ctrl-C"
    )

    ready2, out2 = tmp_path / "ready2.json", tmp_path / "run2.out"
    proc = _start(_command(data_dir, ls_port, backend_port, ready2, "--exit-when-ready"), out2)
    try:
        code = proc.wait(timeout=READY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"second demo run did not finish:\n{h.log_tail(out2)}")
    assert code == 0, h.log_tail(out2)
    again = json.loads(ready2.read_text())
    assert again == info
    assert _printed(out2) == printed
    assert _rows(data_dir / "ls-data" / h.LS_DB_NAME, demo.DEMO_PROJECT_TITLE) == {
        "projects": 1,
        "tasks": 1,
        "ml_backends": 1,
        "storages": 1,
        "webhooks": 1,
    }
