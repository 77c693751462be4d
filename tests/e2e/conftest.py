"""Session fixtures for the end-to-end tests against a real Label Studio 1.23.2.

One Label Studio and one of each backend run per pytest session; they are always stopped at the
end, also when a test fails. Install or start failures FAIL the tests (no silent skip); the only
way to skip is the explicit opt-out ``TAM_SKIP_E2E=1``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # pytest's default "prepend" import mode already put it there
    sys.path.insert(0, _HERE)
import ls_harness as h  # noqa: E402

log = logging.getLogger(__name__)

SKIP_ENV = "TAM_SKIP_E2E"
SEQUENCE = "car-shadow"
DAVIS_DIR = h.DAVIS_DIR
FRAME_COUNT, FRAME_W, FRAME_H = h.FRAME_COUNT, h.FRAME_W, h.FRAME_H
LabelStudio, FramesProject, Interaction = h.LabelStudio, h.FramesProject, h.Interaction
LABEL_CONFIG_PATH = h.REPO_ROOT / "docs" / "labeling-config.xml"
BACKEND_SCRIPT = h.REPO_ROOT / "_wsgi.py"
ECHO_SCRIPT = Path(__file__).resolve().parent / "_echo_backend.py"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: end-to-end test against a real Label Studio (opt out: TAM_SKIP_E2E=1)"
    )


def _fail(exc: BaseException) -> None:
    pytest.fail(f"{type(exc).__name__}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: end-to-end tests against Label Studio disabled on request")
    try:
        with h.running_label_studio(tmp_path_factory.mktemp("ls-e2e")) as ls:
            yield ls
    except h.HarnessError as exc:
        _fail(exc)


@pytest.fixture(scope="session")
def label_config() -> str:
    """The project's documented labeling config (what users paste into LS)."""
    return LABEL_CONFIG_PATH.read_text()


@pytest.fixture(scope="session")
def frame_names(label_studio: LabelStudio) -> list[str]:
    src = DAVIS_DIR / "JPEGImages" / "480p" / SEQUENCE
    return h.copy_frames(src, label_studio.media_root / SEQUENCE, FRAME_COUNT)


@pytest.fixture(scope="session")
def gt_masks(frame_names: list[str]) -> list[Any]:
    ann = DAVIS_DIR / "Annotations" / "480p" / SEQUENCE
    return [h.read_gt_mask(ann / name.replace(".jpg", ".png")) for name in frame_names]


def _make_project(ls: LabelStudio, title: str, config: str, names: list[str]) -> FramesProject:
    data = {"frames": [h.local_file_url(f"{SEQUENCE}/{n}") for n in names], "video": SEQUENCE}
    try:
        pid, tid = h.create_frames_project(ls.client, title, config, ls.media_root / SEQUENCE, data)
        brush, keypoint = (
            h.first_control(config, "BrushLabels"),
            h.first_control(config, "KeyPointLabels"),
        )
    except h.HarnessError as exc:
        _fail(exc)
    return FramesProject(pid, tid, config, names, brush, keypoint)


@pytest.fixture(scope="session")
def tam_project(
    label_studio: LabelStudio, label_config: str, frame_names: list[str]
) -> FramesProject:
    return _make_project(label_studio, "tam-e2e", label_config, frame_names)


@pytest.fixture(scope="session")
def echo_project(
    label_studio: LabelStudio, label_config: str, frame_names: list[str]
) -> FramesProject:
    return _make_project(label_studio, "echo-e2e", label_config, frame_names)


def _run_backend(
    ls: LabelStudio, script: Path, python: Path, name: str
) -> Iterator[h.ManagedProcess]:
    try:
        proc = h.start_backend(python, script, ls.workdir / f"{name}.log", h.backend_env(ls, name))
    except h.HarnessError as exc:
        _fail(exc)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def tam_backend(label_studio: LabelStudio) -> Iterator[h.ManagedProcess]:
    """OUR backend (``_wsgi.py``) started as a subprocess with the project's venv."""
    yield from _run_backend(label_studio, BACKEND_SCRIPT, h.PROJECT_PYTHON, "tam-backend")


@pytest.fixture(scope="session")
def echo_backend(label_studio: LabelStudio) -> Iterator[h.ManagedProcess]:
    yield from _run_backend(label_studio, ECHO_SCRIPT, h.PROJECT_PYTHON, "echo-backend")


def _connect(ls: LabelStudio, project: FramesProject, backend: h.ManagedProcess, title: str) -> int:
    try:
        ml = h.connect_ml_backend(ls.client, project.project_id, backend.base_url, title)
    except h.HarnessError as exc:
        _fail(exc)
    if ml.get("state") != "CO":
        pytest.fail(
            f"ML backend state {ml.get('state')!r} (want 'CO'): {ml.get('error_message')}\n"
            + backend.describe_failure("not connected"),
            pytrace=False,
        )
    return int(ml["id"])


@pytest.fixture(scope="session")
def tam_ml_id(label_studio: LabelStudio, tam_project: FramesProject, tam_backend) -> int:
    return _connect(label_studio, tam_project, tam_backend, "tam")


@pytest.fixture(scope="session")
def echo_ml_id(label_studio: LabelStudio, echo_project: FramesProject, echo_backend) -> int:
    return _connect(label_studio, echo_project, echo_backend, "echo")


def _click(
    ls: LabelStudio,
    project: FramesProject,
    ml_id: int,
    backend: h.ManagedProcess,
    click_xy: tuple[float, float],
) -> Interaction:
    kp_from, kp_to, kp_label = project.keypoint
    point = h.smart_keypoint(*click_xy, FRAME_W, FRAME_H, 0, kp_from, kp_to, kp_label)
    t0 = time.monotonic()
    try:
        results = h.interactive_annotate(ls.client, ml_id, project.task_id, [point])
    except h.HarnessError as exc:
        pytest.fail(f"{exc}\n{backend.describe_failure('interactive call failed')}", pytrace=False)
    return Interaction(click_xy, results, time.monotonic() - t0)


@pytest.fixture(scope="session")
def gt_click(gt_masks: list[Any]) -> tuple[float, float]:
    """Most interior point of the frame-0 ground truth: an unambiguous annotator click."""
    return h.interior_point(gt_masks[0])


@pytest.fixture(scope="session")
def tam_interaction(
    label_studio: LabelStudio,
    tam_project: FramesProject,
    tam_ml_id: int,
    tam_backend: h.ManagedProcess,
    gt_click: tuple[float, float],
) -> Interaction:
    inter = _click(label_studio, tam_project, tam_ml_id, tam_backend, gt_click)
    log.info("interactive call through LS took %.1f s", inter.seconds)
    return inter


@pytest.fixture(scope="session")
def echo_interaction(
    label_studio: LabelStudio,
    echo_project: FramesProject,
    echo_ml_id: int,
    echo_backend: h.ManagedProcess,
    gt_click: tuple[float, float],
) -> Interaction:
    return _click(label_studio, echo_project, echo_ml_id, echo_backend, gt_click)
