"""``make demo``: a local Label Studio 1.23.2 and this backend, ready for the first click.

``python -m backend.demo`` installs Label Studio into its own virtualenv (``.ls-venv``, once),
starts it on 127.0.0.1 with its data under ``.demo/`` and an admin user, creates a project with
``docs/labeling-config.xml``, imports a DAVIS clip from ``../shared`` as one frames task, starts
the backend and connects it with interactive pre-annotations. Then it prints the URL and the
login and waits: Ctrl-C stops both servers. Running it again reuses the user, the project, the
task and the model connection.

The process and REST helpers below are shared with the end-to-end tests
(``tests/e2e/ls_harness.py`` re-exports them). Nothing here reaches beyond 127.0.0.1 except the
one-time ``pip install`` of Label Studio.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
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

import requests

log = logging.getLogger("backend.demo")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT / ".." / "shared"
DAVIS_DIR = SHARED_DIR / "data" / "davis2016-val"
LS_VERSION = "1.23.2"
LS_VENV = REPO_ROOT / ".ls-venv"
PROJECT_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
BACKEND_SCRIPT = REPO_ROOT / "_wsgi.py"
LABEL_CONFIG_PATH = REPO_ROOT / "docs" / "labeling-config.xml"

LS_DB_NAME = "label_studio.sqlite3"
ACCESS_TOKEN_TTL_S = 240.0  # LS access JWTs live 300 s; refresh a minute early.

DEMO_DIR = REPO_ROOT / ".demo"
DEMO_EMAIL = "demo@example.com"
DEMO_PROJECT_TITLE = "Track Anything demo"
DEMO_ML_TITLE = "Track Anything"
DEMO_SEQUENCE = "blackswan"
DEMO_FRAMES = 30


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
    log.info("installing label-studio==%s into %s (once; a few minutes)", version, venv)
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


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:``port`` (ignoring closed connections)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is ok
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
    """The superuser that Label Studio creates at its first start (email = login name)."""

    email: str
    password: str


def label_studio_env(media_root: Path, data_dir: Path, creds: LSCredentials) -> dict[str, str]:
    """Label Studio's settings for a loopback setup with a local backend and local frames."""
    return {
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(media_root),
        "LABEL_STUDIO_USERNAME": creds.email,
        "LABEL_STUDIO_PASSWORD": creds.password,
        # Offline: no usage analytics, no error reports (server and browser), no version check.
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_SENTRY_DSN": "",
        "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
        # Both are needed for a backend on 127.0.0.1: the first blocks adding it (403),
        # the second drops its webhooks.
        "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
        "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",  # else it asks the package index at start
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),  # else it also creates ~/.local/share/...
        "PYTHONUNBUFFERED": "1",
    }


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
    ``db_template``: an already migrated SQLite database copied into a fresh ``data_dir``; the
    first start (migrations, 20-130 s on a busy 2-core box) writes it, later starts take a few
    seconds. LS adds ``creds``' user at start when the database lacks it.
    """
    port = port or free_port()
    db_path = data_dir / LS_DB_NAME
    data_dir.mkdir(parents=True, exist_ok=True)
    use_template = db_template is not None and db_template.exists() and not db_path.exists()
    if use_template:
        shutil.copyfile(db_template, db_path)
    env = _clean_env(label_studio_env(media_root, data_dir, creds))
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


def login_session(base_url: str, creds: LSCredentials, timeout_s: float = 30) -> requests.Session:
    """A browser-like session logged in through the form (session cookie + CSRF)."""
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
    return s


def get_personal_access_token(base_url: str, creds: LSCredentials, timeout_s: float = 30) -> str:
    """Log in with the form and create a Personal Access Token (a JWT refresh token).

    LS allows one valid token per user: a second call answers 400 ``token_exists``.
    """
    s = login_session(base_url, creds, timeout_s)
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


def copy_frames(src_dir: Path, dst_dir: Path, count: int) -> list[str]:
    """Copy the first ``count`` JPEG frames (skipping identical copies); their names in order."""
    names = sorted(p.name for p in src_dir.glob("*.jpg"))[:count]
    if len(names) < count:
        raise HarnessError(f"{src_dir} holds {len(names)} frames, need {count}")
    dst_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        src, dst = src_dir / name, dst_dir / name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dst)
    return names


def local_file_url(rel_path: str) -> str:
    """Task URL served by LS Local Storage for a path relative to the document root."""
    return f"/data/local-files/?d={rel_path}"


def _items(answer: Any, key: str = "results") -> list[dict[str, Any]]:
    """The objects of a list answer, paginated (``{key: [...]}``) or not."""
    if isinstance(answer, dict):
        return list(answer.get(key) or [])
    return list(answer or [])


# --------------------------------------------------------------------------- idempotent setup


def ensure_project(client: LSClient, title: str, label_config: str) -> int:
    """Id of the project called ``title`` (created, or its config updated, as needed)."""
    found = _items(client.get("/api/projects", params={"title": title, "page_size": 100}))
    mine = sorted((p for p in found if p.get("title") == title), key=lambda p: int(p["id"]))
    if not mine:
        project = client.post("/api/projects", {"title": title, "label_config": label_config})
        log.info("created project %s (%r)", project["id"], title)
        return int(project["id"])
    pid = int(mine[0]["id"])
    if mine[0].get("label_config", "").strip() != label_config.strip():
        try:
            client.patch(f"/api/projects/{pid}", {"label_config": label_config})
            log.info("project %d: labeling config updated", pid)
        except HarnessError as exc:  # e.g. a label in use was removed: keep the old config
            log.warning("project %d keeps its labeling config: %s", pid, exc)
    return pid


def ensure_local_storage(client: LSClient, project_id: int, path: Path, title: str) -> int:
    """Id of the project's Local Storage on ``path`` (created when missing)."""
    storages = _items(client.get("/api/storages/localfiles", params={"project": project_id}))
    for st in storages:
        if Path(str(st.get("path", ""))) == path:
            return int(st["id"])
    st = client.post(
        "/api/storages/localfiles",
        {"project": project_id, "path": str(path), "title": title, "use_blob_urls": False},
    )
    return int(st["id"])


def ensure_task(client: LSClient, project_id: int, data: dict[str, Any]) -> int:
    """Id of the project's task whose ``data.frames`` equals ``data["frames"]`` (imported if none)."""

    def find() -> int | None:
        answer = client.get("/api/tasks", params={"project": project_id, "page_size": 1000})
        for task in _items(answer, "tasks"):
            if (task.get("data") or {}).get("frames") == data["frames"]:
                return int(task["id"])
        return None

    tid = find()
    if tid is None:
        client.post(f"/api/projects/{project_id}/import", [{"data": data}])
        tid = find()
        if tid is None:
            raise HarnessError(f"project {project_id}: the imported task is not listed")
        log.info("imported task %d (%d frames)", tid, len(data["frames"]))
    return tid


def ensure_ml_backend(client: LSClient, project_id: int, url: str, title: str) -> dict[str, Any]:
    """Connect (or re-point) the project's interactive ML backend called ``title``.

    Returns LS's backend object; its ``state`` is ``CO`` when LS reached the backend.
    """
    backends = _items(client.get("/api/ml", params={"project": project_id}))
    mine = [b for b in backends if b.get("title") == title]
    if mine:
        ml_id = int(mine[0]["id"])
        if mine[0].get("url") != url or not mine[0].get("is_interactive"):
            client.patch(f"/api/ml/{ml_id}", {"url": url, "is_interactive": True})
    else:
        body = {"url": url, "project": project_id, "title": title, "is_interactive": True}
        ml_id = int(client.post("/api/ml", body)["id"])
        log.info("connected ML backend %d at %s", ml_id, url)
    return client.get(f"/api/ml/{ml_id}")


# --------------------------------------------------------------------------- the demo


@dataclass(frozen=True)
class DemoOptions:
    """Where the demo keeps its state, its ports and the clip it imports."""

    data_dir: Path = DEMO_DIR
    ls_port: int = 8080
    backend_port: int = 9090
    frames_dir: Path = DAVIS_DIR / "JPEGImages" / "480p" / DEMO_SEQUENCE
    frames: int = DEMO_FRAMES
    label_config: Path = LABEL_CONFIG_PATH
    db_template: Path | None = None  # a migrated LS database to start from (tests)
    backend_env: Mapping[str, str] = field(default_factory=dict)  # extra backend settings


@dataclass
class Demo:
    """The running demo: both servers, the login and the Label Studio objects."""

    label_studio: ManagedProcess
    backend: ManagedProcess
    client: LSClient
    creds: LSCredentials
    project_id: int
    task_id: int
    ml_id: int
    media_root: Path  # Label Studio's local-files document root
    clip: str  # the clip's folder under media_root
    frame_names: list[str]

    @property
    def task_url(self) -> str:
        """The labeling page of the demo task."""
        return f"{self.label_studio.base_url}/projects/{self.project_id}/data?task={self.task_id}"

    def info(self) -> dict[str, Any]:
        """What a script needs to find the demo (no secrets)."""
        return {
            "label_studio_url": self.label_studio.base_url,
            "backend_url": self.backend.base_url,
            "task_url": self.task_url,
            "email": self.creds.email,
            "project_id": self.project_id,
            "task_id": self.task_id,
            "ml_backend_id": self.ml_id,
            "frames": len(self.frame_names),
        }

    def alive(self) -> bool:
        return self.label_studio.alive() and self.backend.alive()

    def stop(self) -> None:
        """Stop the backend, then Label Studio."""
        self.backend.stop()
        self.label_studio.stop()


def load_credentials(path: Path) -> tuple[LSCredentials, str | None]:
    """The demo login and its stored Personal Access Token; a new random password at first."""
    if path.exists():
        saved = json.loads(path.read_text())
        return LSCredentials(saved["email"], saved["password"]), saved.get("pat")
    creds = LSCredentials(DEMO_EMAIL, secrets.token_urlsafe(12))
    save_credentials(path, creds, None)
    return creds, None


def save_credentials(path: Path, creds: LSCredentials, pat: str | None) -> None:
    """Write the login (and token) readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"email": creds.email, "password": creds.password, "pat": pat}, fh)
    tmp.replace(path)


def _access_token(base_url: str, creds: LSCredentials, stored: str | None) -> tuple[str, bool]:
    """A working PAT: the stored one, else a new one. Returns ``(pat, is_new)``."""
    if stored:
        try:
            LSClient(base_url, stored).access_token()
            return stored, False
        except HarnessError as exc:
            log.info("stored access token no longer works (%s); creating a new one", exc)
    try:
        return get_personal_access_token(base_url, creds), True
    except HarnessError as exc:
        if "token_exists" in str(exc) or "already have a valid token" in str(exc):
            raise HarnessError(
                f"{creds.email} already has a Personal Access Token that the demo does not know: "
                "revoke it in Label Studio (Account & Settings → Personal Access Token) and run "
                "the demo again, or delete the demo's data directory to start over"
            ) from exc
        raise


def start_demo(opts: DemoOptions) -> Demo:
    """Start Label Studio and the backend and set up the demo project; idempotent on ``data_dir``.

    On failure (or Ctrl-C) everything started so far is stopped before the exception propagates.
    """
    data_dir = opts.data_dir.resolve()
    media_root = data_dir / "media"
    clip = opts.frames_dir.resolve().name
    if not opts.frames_dir.is_dir():
        raise HarnessError(f"frames folder {opts.frames_dir} is missing (pass --frames-dir)")
    for what, port in (("Label Studio", opts.ls_port), ("backend", opts.backend_port)):
        if not port_is_free(port):
            flag = "--ls-port" if what == "Label Studio" else "--backend-port"
            raise HarnessError(f"port {port} for the {what} is in use: pass {flag} PORT")
    names = copy_frames(opts.frames_dir, media_root / clip, opts.frames)
    creds, stored_pat = load_credentials(data_dir / "credentials.json")

    exe = ensure_label_studio()
    first = not (data_dir / "ls-data" / LS_DB_NAME).exists() and not (
        opts.db_template is not None and opts.db_template.exists()
    )
    log.info("starting Label Studio%s", " (first start: database setup, 1-2 min)" if first else "")
    ls = start_label_studio(
        exe,
        data_dir / "ls-data",
        media_root,
        data_dir / "label-studio.log",
        creds,
        port=opts.ls_port,
        db_template=opts.db_template,
    )
    backend: ManagedProcess | None = None
    try:
        pat, is_new = _access_token(ls.base_url, creds, stored_pat)
        if is_new:
            save_credentials(data_dir / "credentials.json", creds, pat)
        client = LSClient(ls.base_url, pat)
        pid = ensure_project(client, DEMO_PROJECT_TITLE, opts.label_config.read_text())
        ensure_local_storage(client, pid, media_root / clip, clip)
        frames = [local_file_url(f"{clip}/{n}") for n in names]
        tid = ensure_task(client, pid, {"frames": frames, "video": clip})
        env = {
            "LABEL_STUDIO_URL": ls.base_url,
            "LABEL_STUDIO_API_KEY": pat,
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(media_root),
            "MODEL_DIR": str(data_dir / "model-dir"),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
            **opts.backend_env,
        }
        (data_dir / "model-dir").mkdir(exist_ok=True)
        backend = start_backend(
            PROJECT_PYTHON, BACKEND_SCRIPT, data_dir / "backend.log", env, port=opts.backend_port
        )
        ml = ensure_ml_backend(client, pid, backend.base_url, DEMO_ML_TITLE)
        if ml.get("state") != "CO":
            raise HarnessError(
                f"Label Studio could not connect the backend (state {ml.get('state')!r}): "
                f"{ml.get('error_message')}\n{backend.describe_failure('not connected')}"
            )
        return Demo(ls, backend, client, creds, pid, tid, int(ml["id"]), media_root, clip, names)
    except BaseException:
        if backend is not None:
            backend.stop()
        ls.stop()
        raise


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _print_ready(demo: Demo, opts: DemoOptions) -> None:
    out = sys.stdout
    lines = [
        "",
        "Track Anything demo is ready.",
        f"  Open:     {demo.task_url}",
        f"  Email:    {demo.creds.email}",
        f"  Password: {demo.creds.password}",
        f"  Backend:  {demo.backend.base_url} (connected, interactive pre-annotations on)",
        f"  Logs:     {opts.data_dir / 'label-studio.log'}, {opts.data_dir / 'backend.log'}",
        "",
        "In the task: turn on Auto-Annotation (bottom bar), pick the smart keypoint tool (last",
        "toolbar button) and 'Object 1' in the second row of labels, click the object, then",
        "accept all suggestions (✓ in the bottom bar). Corrections: docs/correcting-a-frame.md",
        "Press Ctrl-C to stop Label Studio and the backend.",
        "",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m backend.demo",
        description="Local Label Studio 1.23.2 + this backend with a demo clip, ready to click.",
    )
    d = DemoOptions()
    p.add_argument("--data-dir", type=Path, default=d.data_dir, help="state (default: .demo/)")
    p.add_argument("--ls-port", type=int, default=d.ls_port, help="Label Studio port")
    p.add_argument("--backend-port", type=int, default=d.backend_port, help="backend port")
    p.add_argument(
        "--frames-dir",
        type=Path,
        default=d.frames_dir,
        help="folder of JPEG frames to import (default: DAVIS blackswan from ../shared)",
    )
    p.add_argument("--frames", type=int, default=d.frames, help="how many frames (default 30)")
    p.add_argument("--db-template", type=Path, help="migrated LS database for a fresh data dir")
    p.add_argument("--ready-file", type=Path, help="write the demo's ids (JSON) here once ready")
    p.add_argument(
        "--exit-when-ready", action="store_true", help="stop everything once ready (smoke test)"
    )
    p.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING"]
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the demo until Ctrl-C (or SIGTERM); 0 after a clean stop."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    opts = DemoOptions(
        data_dir=args.data_dir,
        ls_port=args.ls_port,
        backend_port=args.backend_port,
        frames_dir=args.frames_dir,
        frames=args.frames,
        db_template=args.db_template,
    )
    # Explicit handlers: a shell starts background jobs with SIGINT ignored, and the demo must
    # still stop cleanly on Ctrl-C / SIGINT and on SIGTERM.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        demo = start_demo(opts)
    except (HarnessError, requests.RequestException, OSError) as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.info("interrupted: stopped")
        return 0
    try:
        _print_ready(demo, opts)
        if args.ready_file:
            args.ready_file.write_text(json.dumps(demo.info(), indent=2))
        while not args.exit_when_ready and demo.alive():
            time.sleep(1.0)
        if not demo.alive():
            dead = demo.label_studio if not demo.label_studio.alive() else demo.backend
            log.error("%s", dead.describe_failure("stopped unexpectedly"))
            return 1
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the teardown
        log.info("stopping the backend and Label Studio")
        demo.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
