"""What is measured is what is served: the in-process session and a running server over
HTTP (as Label Studio calls it) give identical masks on real DAVIS frames, round by round."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.eval import runner
from backend.eval.remote import ServerAnnotators
from tests.conftest import backend_process, free_port

REPO = Path(__file__).resolve().parents[2]
DAVIS = REPO.parent / "shared" / "data" / "davis2016-val"
SEQUENCES = ["car-roundabout", "dog"]


@pytest.fixture
def server(tmp_path):
    if not DAVIS.is_dir():
        pytest.fail(f"{DAVIS} is missing (../shared beside the checkout)")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO")}
    env.update(
        ENGINE="classical",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(DAVIS),
        MODEL_DIR=str(tmp_path / "model_dir"),
        PREDICT_BUDGET_S="600",
    )
    args = ["_wsgi.py", "--port", str(port)]
    with backend_process(args, env, tmp_path / "server.log", port) as url:
        yield url


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): np.asarray(Image.open(p)) for p in folder.rglob("*.png")}


def test_server_and_in_process_eval_give_identical_masks(server, tmp_path):
    kw = dict(sequences=SEQUENCES, rounds=3, max_frames=12)
    local = runner.run_davis(DAVIS, engine="classical", out_dir=tmp_path / "local", **kw)
    remote = runner.run_davis(
        DAVIS, engine=ServerAnnotators(server, DAVIS), out_dir=tmp_path / "remote", **kw
    )
    for name in SEQUENCES:
        assert local["sequences"][name]["rounds"] == remote["sequences"][name]["rounds"], name
        assert local["sequences"][name]["clicks"] == remote["sequences"][name]["clicks"] == 3
    a, b = _masks(tmp_path / "local"), _masks(tmp_path / "remote")
    assert sorted(a) == sorted(b) and len(a) == 24
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert any(a[n].any() for n in a), "not trivially empty"
