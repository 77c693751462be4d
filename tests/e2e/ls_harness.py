"""Reusable harness for end-to-end tests against a real Label Studio 1.23.2.

It installs Label Studio into its own virtual environment (``<repo>/.ls-venv``; LS pins clash with
ours), starts it and an ML backend as subprocesses bound to 127.0.0.1, gets a Personal Access Token
through the login flow, and offers a small REST client plus the mask helpers the tests need.
Nothing here reaches beyond 127.0.0.1 except ``pip``, which uses the machine's package index.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = REPO_ROOT / ".." / "shared"
DAVIS_DIR = SHARED_DIR / "data" / "davis2016-val"
LS_VERSION = "1.23.2"
LS_VENV = REPO_ROOT / ".ls-venv"
PROJECT_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"

LS_DB_NAME = "label_studio.sqlite3"
LS_DB_TEMPLATE = LS_VENV / f"e2e-db-template-{LS_VERSION}.sqlite3"
ACCESS_TOKEN_TTL_S = 240.0  # LS access JWTs live 300 s; refresh a minute early.

# The e2e scenario: the first 20 frames of DAVIS car-shadow (854×480), one object.
FRAME_COUNT = 20
FRAME_W, FRAME_H = 854, 480


class HarnessError(RuntimeError):
    """Label Studio or a backend could not be installed, started or talked to."""


# --------------------------------------------------------------------------- installation


def installed_ls_version(venv: Path) -> str | None:
    """Version of ``label-studio`` installed in ``venv``, or None when absent/broken."""
    python = venv / "bin" / "python"
    if not (venv / "bin" / "label-studio").exists() or not python.exists():
        return None
    probe = "import importlib.metadata as m; print(m.version('label-studio'))"
    res = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
    return res.stdout.strip() if res.returncode == 0 else None


def ensure_label_studio(
    venv: Path = LS_VENV, version: str = LS_VERSION, timeout_s: float = 1200
) -> Path:
    """Install ``label-studio==version`` into ``venv`` unless it is already there.

    Returns the ``label-studio`` executable. Raises HarnessError with pip's output tail on failure.
    """
    import fcntl

    venv.mkdir(parents=True, exist_ok=True)
    with open(venv / ".e2e-install.lock", "w") as lock:  # concurrent sessions install once
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _install_locked(venv, version, timeout_s)


def _install_locked(venv: Path, version: str, timeout_s: float) -> Path:
    exe = venv / "bin" / "label-studio"
    if installed_ls_version(venv) == version:
        return exe
    log.info("installing label-studio==%s into %s", version, venv)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"label-studio=={version}"],
    ]
    deadline = time.monotonic() + timeout_s
    for cmd in steps:
        try:
            res = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
            )
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"timed out after {timeout_s:.0f} s: {' '.join(cmd)}") from exc
        if res.returncode != 0:
            out = _last_lines(res.stdout + res.stderr, 40)
            raise HarnessError(f"command failed ({res.returncode}): {' '.join(cmd)}\n{out}")
    got = installed_ls_version(venv)
    if got != version:
        raise HarnessError(f"label-studio in {venv} reports {got!r}, expected {version}")
    return exe


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _last_lines(text: str, n: int) -> str:
    lines = [ln for ln in text.splitlines() if "is ignored: it is neither a file" not in ln]
    return "\n".join(lines[-n:])


def log_tail(path: Path, n: int = 60) -> str:
    """Last ``n`` lines of a log file (empty string when it does not exist)."""
    try:
        return _last_lines(path.read_text(errors="replace"), n)
    except FileNotFoundError:
        return ""


@dataclass
class ManagedProcess:
    """A server subprocess in its own process group, with its combined log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    base_url: str

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it does not exit in time."""
        if not self.alive():
            return
        pgid = self.popen.pid  # start_new_session=True made the child its group leader
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue
        log.warning("%s (pid %d) did not exit", self.name, pgid)

    def describe_failure(self, what: str) -> str:
        code = self.popen.poll()
        state = "running" if code is None else f"exited with {code}"
        return f"{self.name}: {what} ({state}); log tail of {self.log_path}:\n{log_tail(self.log_path)}"


def spawn(
    name: str, cmd: list[str], env: Mapping[str, str], log_path: Path, base_url: str
) -> ManagedProcess:
    """Start ``cmd`` in a new session with stdout+stderr going to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as fh:
        popen = subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
        )
    return ManagedProcess(name=name, popen=popen, log_path=log_path, base_url=base_url)


def wait_until(
    proc: ManagedProcess,
    check: Callable[[], bool],
    timeout_s: float,
    what: str,
    poll_s: float = 0.5,
) -> float:
    """Poll ``check`` until it is true; returns seconds waited, raises HarnessError otherwise."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if not proc.alive():
            raise HarnessError(proc.describe_failure(f"died before {what}"))
        try:
            if check():
                return time.monotonic() - t0
        except requests.RequestException:
            pass
        time.sleep(poll_s)
    raise HarnessError(proc.describe_failure(f"no {what} after {timeout_s:.0f} s"))


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Our environment minus variables that would leak into the servers' configuration."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LABEL_STUDIO_", "DJANGO_", "BASIC_AUTH_", "ML_TIMEOUT"))
        and k not in {"VIRTUAL_ENV", "PYTHONPATH", "MODEL_DIR"}
    }
    env.update(extra)
    return env


@dataclass(frozen=True)
class LSCredentials:
    """Test-only superuser that Label Studio creates at its first start."""

    email: str = "e2e@example.com"
    password: str = "e2e-pass-not-secret-123"


def start_label_studio(
    exe: Path,
    data_dir: Path,
    media_root: Path,
    log_path: Path,
    creds: LSCredentials,
    port: int | None = None,
    timeout_s: float = 300.0,
    db_template: Path | None = None,
) -> ManagedProcess:
    """Start LS on 127.0.0.1 and wait for ``/health`` UP on exactly the port we asked for.

    LS silently moves to the next port when the requested one is busy, so besides the health
    probe we require Django's "Starting development server at http://127.0.0.1:<port>/" line.
    ``db_template``: an already migrated SQLite database (with the superuser) copied into a fresh
    ``data_dir``; the first start (migrations, 20-130 s on a busy 2-core box) writes it, later
    starts take a few seconds.
    """
    port = port or free_port()
    db_path = data_dir / LS_DB_NAME
    data_dir.mkdir(parents=True, exist_ok=True)
    use_template = db_template is not None and db_template.exists() and not db_path.exists()
    if use_template:
        shutil.copyfile(db_template, db_path)
    env = _clean_env(
        {
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(media_root),
            "LABEL_STUDIO_USERNAME": creds.email,
            "LABEL_STUDIO_PASSWORD": creds.password,
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
            "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",  # else it asks pypi.org at start
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),  # else it also creates ~/.local/share/...
            "PYTHONUNBUFFERED": "1",
        }
    )
    cmd = [
        str(exe),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    base = f"http://127.0.0.1:{port}"
    proc = spawn("label-studio", cmd, env, log_path, base)
    marker = f"Starting development server at {base}/"

    busy = f"* Port {port} is in use."

    def up() -> bool:
        text = log_path.read_text(errors="replace")
        if busy in text:
            raise HarnessError(proc.describe_failure(f"port {port} was taken; LS moved elsewhere"))
        r = requests.get(f"{base}/health", timeout=2)
        return r.ok and r.json().get("status") == "UP" and marker in text

    try:
        waited = wait_until(proc, up, timeout_s, f"/health UP on port {port}")
    except BaseException:
        died = not proc.alive()
        proc.stop()
        if died and use_template and db_template is not None:
            db_template.unlink(missing_ok=True)  # maybe the template is bad: next run migrates
        raise
    log.info("label-studio up on %s after %.1f s (db template: %s)", base, waited, use_template)
    if db_template is not None and not db_template.exists():
        snapshot_sqlite(db_path, db_template)
    return proc


def snapshot_sqlite(src: Path, dst: Path) -> None:
    """Consistent copy of a live SQLite database (``sqlite3`` backup API), written atomically."""
    import sqlite3

    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with sqlite3.connect(src) as s, sqlite3.connect(tmp) as d:
        s.backup(d)
    s.close()
    d.close()
    tmp.replace(dst)


def backend_env(ls: LabelStudio, name: str, **extra: str) -> dict[str, str]:
    """Environment for a backend called ``name`` connected to ``ls`` (own MODEL_DIR), plus ``extra``."""
    model_dir = ls.workdir / f"{name}-model-dir"
    model_dir.mkdir(exist_ok=True)
    return {
        "LABEL_STUDIO_URL": ls.base_url,
        "LABEL_STUDIO_API_KEY": ls.pat,
        "MODEL_DIR": str(model_dir),
        "LOG_LEVEL": "INFO",
        **extra,
    }


def start_backend(
    python: Path,
    script: Path,
    log_path: Path,
    env_extra: Mapping[str, str],
    port: int | None = None,
    timeout_s: float = 180.0,
) -> ManagedProcess:
    """Start an ML backend ``python script --host 127.0.0.1 --port P``; wait for /health 200."""
    if not script.exists():
        raise HarnessError(f"backend entry point {script} does not exist")
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    env = _clean_env({"PYTHONUNBUFFERED": "1", **env_extra})
    cmd = [str(python), str(script), "--host", "127.0.0.1", "--port", str(port)]
    proc = spawn(f"backend {script.name}", cmd, env, log_path, base)
    try:
        waited = wait_until(
            proc,
            lambda: requests.get(f"{base}/health", timeout=2).status_code == 200,
            timeout_s,
            f"/health 200 on port {port}",
        )
    except BaseException:
        proc.stop()
        raise
    log.info("%s up on %s after %.1f s", script.name, base, waited)
    return proc


# --------------------------------------------------------------------------- REST client


def get_personal_access_token(base_url: str, creds: LSCredentials, timeout_s: float = 30) -> str:
    """Log in with the form (session + CSRF) and create a Personal Access Token (a JWT refresh)."""
    s = requests.Session()
    r = s.get(f"{base_url}/user/login/", timeout=timeout_s)
    r.raise_for_status()
    form = {
        "csrfmiddlewaretoken": s.cookies.get("csrftoken", ""),
        "email": creds.email,
        "password": creds.password,
    }
    r = s.post(f"{base_url}/user/login/", data=form, allow_redirects=False, timeout=timeout_s)
    if r.status_code != 302:
        raise HarnessError(f"login answered {r.status_code}, expected 302: {r.text[:300]}")
    headers = {"X-CSRFToken": s.cookies.get("csrftoken", ""), "Referer": f"{base_url}/"}
    r = s.post(f"{base_url}/api/token/", headers=headers, timeout=timeout_s)
    if not r.ok or "token" not in r.json():
        raise HarnessError(f"POST /api/token/ answered {r.status_code}: {r.text[:300]}")
    return str(r.json()["token"])


@dataclass
class LSClient:
    """Minimal LS REST client: PAT → short-lived access JWT, sent as ``Bearer``."""

    base_url: str
    pat: str
    timeout_s: float = 120.0
    _session: requests.Session = field(default_factory=requests.Session, repr=False)
    _access: str = field(default="", repr=False)
    _access_at: float = field(default=0.0, repr=False)

    def access_token(self, force: bool = False) -> str:
        """A valid access JWT, refreshed when older than ACCESS_TOKEN_TTL_S."""
        if force or not self._access or time.monotonic() - self._access_at > ACCESS_TOKEN_TTL_S:
            r = self._session.post(
                f"{self.base_url}/api/token/refresh/", json={"refresh": self.pat}, timeout=30
            )
            if not r.ok:
                raise HarnessError(f"token refresh answered {r.status_code}: {r.text[:300]}")
            self._access, self._access_at = r.json()["access"], time.monotonic()
        return self._access

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send an authorized request; on 401 refresh the access token once and retry."""
        kwargs.setdefault("timeout", self.timeout_s)
        for attempt in range(2):
            token = self.access_token(force=attempt > 0)
            kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {token}"}
            r = self._session.request(method, f"{self.base_url}{path}", **kwargs)
            if r.status_code != 401:
                return r
        return r

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.request(method, path, **kwargs)
        if not r.ok:
            raise HarnessError(f"{method} {path} answered {r.status_code}: {r.text[:1000]}")
        return r.json() if r.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self._json("GET", path, **kwargs)

    def post(self, path: str, payload: Any = None, **kwargs: Any) -> Any:
        return self._json("POST", path, json=payload, **kwargs)

    def patch(self, path: str, payload: Any = None, **kwargs: Any) -> Any:
        return self._json("PATCH", path, json=payload, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self._json("DELETE", path, **kwargs)


# --------------------------------------------------------------------------- LS objects


def copy_frames(src_dir: Path, dst_dir: Path, count: int) -> list[str]:
    """Copy the first ``count`` JPEG frames; returns their file names in order."""
    names = sorted(p.name for p in src_dir.glob("*.jpg"))[:count]
    if len(names) < count:
        raise HarnessError(f"{src_dir} holds {len(names)} frames, need {count}")
    dst_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(src_dir / name, dst_dir / name)
    return names


def local_file_url(rel_path: str) -> str:
    """Task URL served by LS Local Storage for a path relative to the document root."""
    return f"/data/local-files/?d={rel_path}"


def create_frames_project(
    client: LSClient, title: str, label_config: str, storage_dir: Path, task_data: dict[str, Any]
) -> tuple[int, int]:
    """Create a project, a Local Storage connection on ``storage_dir`` and one task.

    Returns ``(project_id, task_id)``.
    """
    project = client.post("/api/projects", {"title": title, "label_config": label_config})
    pid = int(project["id"])
    client.post(
        "/api/storages/localfiles",
        {"project": pid, "path": str(storage_dir), "title": "frames", "use_blob_urls": False},
    )
    client.post(f"/api/projects/{pid}/import", [{"data": task_data}])
    tasks = client.get("/api/tasks", params={"project": pid})
    tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
    if len(tasks) != 1:
        raise HarnessError(f"project {pid} has {len(tasks)} tasks after import, expected 1")
    return pid, int(tasks[0]["id"])


def connect_ml_backend(client: LSClient, project_id: int, url: str, title: str) -> dict[str, Any]:
    """Register an interactive ML backend on a project and return LS's backend object."""
    ml = client.post(
        "/api/ml", {"url": url, "project": project_id, "title": title, "is_interactive": True}
    )
    return client.get(f"/api/ml/{ml['id']}")


def interactive_annotate(
    client: LSClient, ml_id: int, task_id: int, context_results: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """POST the UI's interactive-annotating call; return ``data.result`` or raise with LS's errors.

    LS answers HTTP 200 even when the backend failed (``{"errors": [...]}``).
    """
    body = {"task": task_id, "context": {"result": context_results}}
    answer = client.post(f"/api/ml/{ml_id}/interactive-annotating", body)
    if not isinstance(answer, dict) or answer.get("errors") or "data" not in answer:
        raise HarnessError(f"interactive-annotating failed: {json.dumps(answer)[:2000]}")
    return list(answer["data"].get("result", []))


def smart_keypoint(
    x_px: float,
    y_px: float,
    width: int,
    height: int,
    item_index: int,
    from_name: str,
    to_name: str,
    label: str,
    positive: bool = True,
    region_id: str = "e2eClick01",
) -> dict[str, Any]:
    """A smart KeyPointLabels region exactly as the 1.23.2 UI sends it (percent coordinates)."""
    return {
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "item_index": item_index,
        "value": {
            "x": 100.0 * x_px / width,
            "y": 100.0 * y_px / height,
            "width": 0.2,
            "labels": [label],
            "keypointlabels": [label],
        },
        "is_positive": positive,
        "id": region_id,
        "from_name": from_name,
        "to_name": to_name,
        "type": "keypointlabels",
        "origin": "manual",
    }


def first_control(label_config: str, tag: str) -> tuple[str, str, str]:
    """``(from_name, to_name, first_label)`` of the first control ``tag`` in a config."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(label_config)
    for el in root.iter(tag):
        labels = [lab.get("value", "") for lab in el.iter("Label")]
        return el.get("name", ""), el.get("toName", ""), labels[0] if labels else ""
    raise HarnessError(f"no <{tag}> in the labeling config")


# --------------------------------------------------------------------------- scenario records


@dataclass(frozen=True)
class LabelStudio:
    """A running LS instance and an authorized client for it."""

    base_url: str
    client: LSClient
    pat: str
    media_root: Path
    workdir: Path


@dataclass(frozen=True)
class FramesProject:
    """An LS project holding one multi-image (frames) task."""

    project_id: int
    task_id: int
    label_config: str
    frame_names: list[str]
    brush: tuple[str, str, str]  # from_name, to_name, first label
    keypoint: tuple[str, str, str]


@dataclass(frozen=True)
class Interaction:
    """One click sent through LS to a backend, and what came back."""

    click_xy: tuple[float, float]
    results: list[dict[str, Any]]
    seconds: float


# --------------------------------------------------------------------------- masks


def decode_brush(result: Mapping[str, Any]) -> np.ndarray:
    """Decode a ``brushlabels`` result's LS RLE to an ``H×W`` uint8 alpha mask."""
    from label_studio_sdk.converter.brush import decode_rle

    h, w = int(result["original_height"]), int(result["original_width"])
    flat = decode_rle(result["value"]["rle"])
    if flat.size != h * w * 4:
        raise HarnessError(f"RLE holds {flat.size} values, expected {h}x{w}x4")
    return flat.reshape(h, w, 4)[:, :, 3]


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """Pixel centre ``(x, y)`` of the distance-transform maximum: the most interior point."""
    import cv2

    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x) + 0.5, float(y) + 0.5


def read_gt_mask(path: Path) -> np.ndarray:
    """DAVIS annotation PNG → bool mask (foreground > 127)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise HarnessError(f"cannot read {path}")
    return img > 127
