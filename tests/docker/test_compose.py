"""docker-compose.yml's backend service with a real Label Studio 1.23.2.

The Label Studio image cannot be pulled here, so Label Studio runs from its pip install
(``.ls-venv``, as in the e2e tests) and the backend service runs alone from the CPU image, on the
host network, with the environment and mounts that docker-compose.yml gives it (./media
read-only, ./weights read-only, the model-dir volume). A click sent through Label Studio's
interactive-annotating API comes back as one mask per frame of the task.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import yaml

from backend.masks import jaccard
from tests.docker.conftest import REPO, BuiltImage, Docker, container_log, report, wait_healthy
from tests.e2e import ls_harness as h

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SEQUENCE, FRAMES = "car-shadow", 12
COMPOSE = REPO / "docker-compose.yml"
SERVICE = "tam-backend"


def _fail(exc: BaseException) -> None:
    pytest.fail(f"{type(exc).__name__}: {exc}", pytrace=False)


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME:-default}`` / ``${NAME}`` substitution, from ``env`` only."""

    def sub(m: re.Match) -> str:
        return env.get(m.group(1)) or (m.group(3) or "")

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", sub, value)


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[h.LabelStudio]:
    if os.environ.get("TAM_SKIP_E2E") == "1":
        pytest.skip("TAM_SKIP_E2E=1: tests against Label Studio disabled on request")
    workdir = tmp_path_factory.mktemp("ls-docker")
    workdir.chmod(0o755)
    media_root = workdir / "media"
    media_root.mkdir(mode=0o755)
    creds = h.LSCredentials()
    try:
        proc = h.start_label_studio(
            h.ensure_label_studio(),
            workdir / "ls-data",
            media_root,
            workdir / "label-studio.log",
            creds,
            db_template=h.LS_DB_TEMPLATE,
        )
    except h.HarnessError as exc:
        _fail(exc)
    try:
        pat = h.get_personal_access_token(proc.base_url, creds)
        yield h.LabelStudio(proc.base_url, h.LSClient(proc.base_url, pat), pat, media_root, workdir)
    except h.HarnessError as exc:
        _fail(exc)
    finally:
        proc.stop()


@pytest.fixture
def model_volume(docker: Docker) -> Iterator[str]:
    name = f"tam-test-model-dir-{uuid.uuid4().hex[:8]}"
    yield name
    users = docker.run("ps", "-aq", "--filter", f"volume={name}", check=False).split()
    if users:  # the container fixture may be torn down after this one
        docker.run("rm", "-f", *users, check=False)
    docker.run("volume", "rm", "-f", name, check=False)


def test_compose_backend_service_answers_a_click_through_label_studio(
    docker: Docker,
    cpu_image: BuiltImage,
    label_studio: h.LabelStudio,
    container_name: str,
    model_volume: str,
) -> None:
    ls = label_studio
    service = yaml.safe_load(COMPOSE.read_text())["services"][SERVICE]
    names = h.copy_frames(
        h.DAVIS_DIR / "JPEGImages" / "480p" / SEQUENCE, ls.media_root / SEQUENCE, FRAMES
    )
    weights = ls.workdir / "weights"
    weights.mkdir(mode=0o755)
    host_dirs = {"./media": ls.media_root, "./weights": weights}

    # The service as compose would start it, on the host network instead of compose's own.
    given = {"LABEL_STUDIO_URL": ls.base_url, "LABEL_STUDIO_API_KEY": ls.pat}
    port = h.free_port()
    args = ["run", "-d", "--name", container_name, "--network", "host"]
    for key, value in service["environment"].items():
        args += ["-e", f"{key}={_interpolate(str(value), given)}"]
    args += ["-e", "HOST=127.0.0.1", "-e", f"PORT={port}", "--health-interval", "2s"]
    mounts = {}
    for volume in service["volumes"]:
        source, target, *mode = volume.split(":")
        mounts[target] = source
        source = str(host_dirs[source]) if source.startswith("./") else model_volume
        args += ["-v", ":".join([source, target, *mode])]
    assert mounts == {"/media": "./media", "/weights": "./weights", "/data/model_dir": "model-dir"}
    docker.run(*args, cpu_image.tag)
    state = wait_healthy(docker, container_name)
    assert state == "running healthy", f"{state}\n{container_log(docker, container_name)}"

    config = (REPO / "docs" / "labeling-config.xml").read_text()
    data = {"frames": [h.local_file_url(f"{SEQUENCE}/{n}") for n in names], "video": SEQUENCE}
    try:
        pid, tid = h.create_frames_project(
            ls.client, "docker", config, ls.media_root / SEQUENCE, data
        )
        ml = h.connect_ml_backend(ls.client, pid, f"http://127.0.0.1:{port}", "tam-docker")
        assert ml.get("state") == "CO", f"{ml}\n{container_log(docker, container_name)}"
        ann = h.DAVIS_DIR / "Annotations" / "480p" / SEQUENCE
        gt = [h.read_gt_mask(ann / n.replace(".jpg", ".png")) for n in names]
        x, y = h.interior_point(gt[0])
        point = h.smart_keypoint(
            x, y, h.FRAME_W, h.FRAME_H, 0, *h.first_control(config, "KeyPointLabels")
        )
        results = h.interactive_annotate(ls.client, int(ml["id"]), tid, [point])
    except h.HarnessError as exc:
        pytest.fail(f"{exc}\n{container_log(docker, container_name)}", pytrace=False)

    masks = {r["item_index"]: h.decode_brush(r) > 0 for r in results if r["type"] == "brushlabels"}
    assert sorted(masks) == list(range(FRAMES)), sorted(masks)
    scores = [jaccard(g, masks[i]) for i, g in enumerate(gt)]
    report(f"click through Label Studio, {FRAMES} {SEQUENCE} frames: J mean {np.mean(scores):.3f}")
    assert float(np.mean(scores)) > 0.5, scores
