"""The CPU image built from this checkout serves a click on real DAVIS frames.

The container runs without any network (``--network none``): the frames are mounted read-only
as the local-files root, and requests are made from inside it. It must report the weights-free
engine, return one mask per frame sent (close to the DAVIS ground truth), run as a non-root user,
keep MODEL_DIR on a volume, and become healthy through its own HEALTHCHECK.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.eval.clicks import first_frame_clicks
from backend.eval.davis import load_sequence, read_ground_truth
from backend.eval.remote import keypoint, label_config, local_files_url
from backend.ls import rle
from backend.masks import jaccard
from tests.conftest import DAVIS
from tests.docker.conftest import BuiltImage, Docker, container_log, report, wait_healthy

pytestmark = pytest.mark.slow

SEQUENCE, FRAMES = "blackswan", 10
MEDIA = "/media"  # the local-files root inside the container

# Run inside the container: send stdin (or nothing) to 127.0.0.1:$PORT/<path>, print
# {"status": ..., "body": ...} as JSON. Standard library only.
REQUEST = """
import json, os, sys, urllib.error, urllib.request
path = sys.argv[1]
data = sys.stdin.buffer.read() or None
req = urllib.request.Request(f"http://127.0.0.1:{os.environ['PORT']}{path}", data=data,
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=300) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
json.dump({"status": status, "body": body.decode()}, sys.stdout)
"""


def _call(docker: Docker, name: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    out = docker.run(
        "exec", "-i", name, "python", "-c", REQUEST, path,
        input=json.dumps(body) if body is not None else "", timeout=400,
    )  # fmt: skip
    answer = json.loads(out)
    try:
        return int(answer["status"]), json.loads(answer["body"])
    except ValueError:
        pytest.fail(f"{path} answered {answer['status']} with non-JSON: {answer['body'][:500]}")


@pytest.fixture(scope="module")
def click_task():
    if not DAVIS.is_dir():
        pytest.fail(f"{DAVIS} is missing (../shared beside the checkout)")
    seq = load_sequence(DAVIS, SEQUENCE, FRAMES)
    gt = [g == 1 for g in read_ground_truth(seq)]
    (click,) = first_frame_clicks(gt[0].astype(np.uint8), [1]).values()
    h, w = gt[0].shape
    body = {
        "tasks": [{"id": 1, "data": {"frames": [local_files_url(p, DAVIS) for p in seq.images]}}],
        "label_config": label_config(1),
        "params": {"context": {"result": [keypoint(click, 0, "object 1", (w, h), 0)]}},
    }  # fmt: skip
    return body, gt


def test_cpu_image_answers_a_click_offline_as_non_root(
    docker: Docker, cpu_image: BuiltImage, container_name: str, click_task
) -> None:
    name = container_name
    docker.run(
        "run", "-d", "--name", name, "--network", "none",
        "-v", f"{DAVIS.resolve()}:{MEDIA}:ro",
        "-e", f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={MEDIA}",
        # the image's own HEALTHCHECK, polled faster than its 30 s default
        "--health-interval", "2s", "--health-start-period", "120s",
        cpu_image.tag,
    )  # fmt: skip
    state = wait_healthy(docker, name)
    assert state == "running healthy", f"{state}\n{container_log(docker, name)}"

    status, health = _call(docker, name, "/health")
    assert status == 200, health
    assert health["status"] == "UP" and health["engine"] == "classical", health

    body, gt = click_task
    status, answer = _call(docker, name, "/predict", body)
    assert status == 200, f"{answer}\n{container_log(docker, name)}"
    (prediction,) = answer["results"]
    h, w = gt[0].shape
    masks: dict[int, np.ndarray] = {}
    for region in prediction["result"]:
        assert region["type"] == "brushlabels", region["type"]
        masks[region["item_index"]] = rle.decode(region["value"]["rle"], h, w)
    assert sorted(masks) == list(range(FRAMES)), sorted(masks)
    scores = [jaccard(g, masks[i]) for i, g in enumerate(gt)]
    report(
        f"offline click, {FRAMES} {SEQUENCE} frames: J mean {np.mean(scores):.3f}, min {min(scores):.3f}"
    )
    assert min(scores) > 0.3 and float(np.mean(scores)) > 0.6, scores

    # The server (PID 1 after the shell's exec) runs as the image's non-root user.
    status_lines = docker.run("exec", name, "cat", "/proc/1/status").splitlines()
    uids = next(line for line in status_lines if line.startswith("Uid:")).split()[1:]
    assert uids and all(u != "0" for u in uids), uids
    cmdline = docker.run("exec", name, "cat", "/proc/1/cmdline").replace("\0", " ")
    assert "gunicorn" in cmdline, cmdline

    # MODEL_DIR is a volume the server writes its job store into.
    volumes = json.loads(
        docker.run("inspect", cpu_image.tag, "--format", "{{json .Config.Volumes}}")
    )
    assert "/data/model_dir" in volumes, volumes
    listing = docker.run("exec", name, "ls", "/data/model_dir").split()
    assert "jobs.sqlite3" in listing, listing


def test_cpu_image_holds_no_weights_and_no_dev_tools(docker: Docker, cpu_image: BuiltImage) -> None:
    found = docker.run(
        "run", "--rm", "--network", "none", cpu_image.tag, "sh", "-c",
        "find /app /data /weights -name '*.pth' -o -name '*.pt' -o -name '*.safetensors';"
        " python -c 'import torch; print(\"torch\", torch.__version__, torch.version.cuda)';"
        " pip list --format=freeze 2>/dev/null | grep -icE '^(pytest|ruff|hypothesis|nvidia-)' || true",
    ).split("\n")  # fmt: skip
    lines = [line for line in found if line.strip()]
    assert lines[-2].startswith("torch ") and lines[-2].endswith(" None"), lines  # a CPU build
    assert lines[-1] == "0", lines  # no test tools, no NVIDIA libraries
    assert len(lines) == 2, lines  # no checkpoint files


def test_cpu_image_self_check_passes_offline(docker: Docker, cpu_image: BuiltImage) -> None:
    proc = docker.run(
        "run", "--rm", "--network", "none", cpu_image.tag, "python", "/app/selfcheck.py",
        check=False, full=True,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-3000:]}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["engine"] == "classical", summary
    assert summary["device"] == "cpu" and summary["frames"] == 8, summary
