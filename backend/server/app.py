"""Our thin Flask 3 server speaking the Label Studio ML backend protocol.

Endpoints: ``GET /`` and ``/health``, ``POST /setup``, ``POST /predict``,
``POST /webhook``, ``GET /versions``, ``GET /metrics``, ``GET /jobs`` and
``GET /jobs/<id>`` (background propagation progress). Every error is JSON
``{"errors": [message]}`` with a 4xx/5xx status; tracebacks go to the log,
never to the client. The model object does the work (see ``model.py``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import threading
import time
from typing import Any, Protocol

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from backend.config import Settings
from backend.runs import BusyError
from backend.server.errors import RequestError, status_for
from backend.server.metrics import Metrics

log = logging.getLogger(__name__)


class Model(Protocol):
    def health(self) -> dict[str, Any]: ...
    def setup(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def predict(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def webhook(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def versions(self) -> dict[str, Any]: ...
    def list_jobs(self) -> dict[str, Any]: ...
    def get_job(self, job_id: str) -> dict[str, Any] | None: ...
    def refresh_metrics(self) -> None: ...


def _json_body() -> dict[str, Any]:
    """The request's JSON object, or a RequestError saying what is wrong (a body over
    MAX_REQUEST_BYTES, chunked or not, is a 413 from the size check while reading)."""
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if limit is not None and request.content_length is None and len(raw) >= limit:
        # a streamed (chunked) body is cut at the limit while read: it was larger
        raise RequestEntityTooLarge(f"request body exceeds MAX_REQUEST_BYTES={limit}")
    if not raw.strip():
        raise RequestError("empty request body; expected a JSON object")
    try:
        body = json.loads(raw)
    except RecursionError:
        raise RequestError(
            "request body is nested too deeply to be a Label Studio request"
        ) from None
    except ValueError:  # also bytes that are not UTF-8
        raise RequestError("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    return body


def _error(message: str, status: int) -> Response:
    resp = jsonify({"errors": [message]})
    resp.status_code = status
    return resp


def _check_basic_auth(settings: Settings) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "basic":  # auth schemes are case-insensitive (RFC 9110)
        return False
    try:
        user, _, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    ok_user = hmac.compare_digest(user.encode(), settings.basic_auth_user.encode())
    ok_pass = hmac.compare_digest(password.encode(), settings.basic_auth_pass.encode())
    return ok_user and ok_pass


def create_app(settings: Settings, model: Model, metrics: Metrics | None = None) -> Flask:
    """Build the WSGI app around ``model``."""
    app = Flask("tam-backend")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False
    metrics = metrics or Metrics()
    app.extensions["tam_metrics"] = metrics

    @app.before_request
    def _start() -> Response | None:
        g.t0 = time.perf_counter()
        if settings.basic_auth_enabled and not _check_basic_auth(settings):
            resp = _error("authentication required (HTTP basic auth)", 401)
            resp.headers["WWW-Authenticate"] = 'Basic realm="tam-backend"'
            return resp
        return None

    @app.after_request
    def _count(resp: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        elapsed = time.perf_counter() - g.get("t0", time.perf_counter())
        metrics.inc(
            "requests_total",
            help="HTTP requests by endpoint and status",
            endpoint=endpoint,
            method=request.method,
            status=str(resp.status_code),
        )
        metrics.observe(
            "request_duration_seconds",
            elapsed,
            help="HTTP request latency",
            endpoint=endpoint,
        )
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return _error(exc.description or exc.name, exc.code or 500)

    @app.errorhandler(Exception)
    def _any_error(exc: Exception) -> Response:
        status = status_for(exc)
        if status is None:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return _error(f"internal error ({type(exc).__name__}); see the backend log", 500)
        log.warning("%s %s → %d: %s", request.method, request.path, status, exc)
        return _error(str(exc), status)

    @app.get("/")
    @app.get("/health")
    def health() -> Response:
        body = model.health()
        resp = jsonify(body)
        resp.status_code = 200 if body.get("status") == "UP" else 503
        return resp

    @app.post("/setup")
    def setup() -> Response:
        return jsonify(model.setup(_json_body()))

    # Heavy requests are admitted a few at a time, so request threads stay free for /health,
    # /metrics and quick refusals while every engine worker is busy.
    heavy = threading.BoundedSemaphore(settings.max_concurrent_predicts)

    @app.post("/predict")
    def predict() -> Response:
        body = _json_body()  # read first: a slow client does not hold a slot
        if not heavy.acquire(blocking=False):
            metrics.inc("busy_total", help="requests refused because the backend was busy")
            raise BusyError(
                f"the backend is busy: {settings.max_concurrent_predicts} predictions are "
                "running (MAX_CONCURRENT_PREDICTS); click again in a moment"
            )
        try:
            return jsonify(model.predict(body))
        finally:
            heavy.release()

    @app.post("/webhook")
    def webhook() -> Response:
        try:
            body = _json_body()
        except RequestError as exc:
            return jsonify({"status": "ignored", "reason": str(exc)})
        return jsonify(model.webhook(body))

    @app.get("/versions")
    def versions() -> Response:
        return jsonify(model.versions())

    @app.get("/jobs")
    def jobs() -> Response:
        return jsonify(model.list_jobs())

    @app.get("/jobs/<job_id>")
    def job(job_id: str) -> Response:
        state = model.get_job(job_id)
        if state is None:
            return _error(f"no job {job_id!r}", 404)
        return jsonify(state)

    @app.get("/metrics")
    def prometheus() -> Response:
        model.refresh_metrics()
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")

    return app
