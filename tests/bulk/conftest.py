"""Fixtures of the bulk tests: a real Label Studio 1.23.2 (the e2e harness) with two small
projects — image-sequence frames and ``<Video>`` files made from DAVIS clips — and one local
Ray runtime with 2 CPUs shared by a test module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.bulk.harness import (
    SEQ_CONFIG,
    VIDEO_CONFIG,
    BulkLS,
    annotate,
    box,
    click,
    h,
    project,
    write_frames,
    write_video,
)


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[h.LabelStudio]:
    """A Label Studio of its own for the module, stopped after it (not kept for the session
    beside the e2e tests' one)."""
    if os.environ.get("TAM_SKIP_E2E") == "1":
        pytest.skip("TAM_SKIP_E2E=1: end-to-end tests against Label Studio disabled on request")
    try:
        with h.running_label_studio(tmp_path_factory.mktemp("ls-bulk")) as ls:
            yield ls
    except h.HarnessError as exc:
        pytest.fail(f"HarnessError: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def bulk_ls(label_studio: h.LabelStudio) -> BulkLS:
    """8 tasks: 5 image-sequence ones (two annotated, one with only a draft, one annotated
    with a corrupt frame, one without prompts) and 3 ``<Video>`` ones (two with a box, one
    without)."""
    root = label_studio.media_root
    images = project(label_studio, "bulk-images", SEQ_CONFIG, {
        "car": {"frames": write_frames(root, "bulk/car", "car-shadow")},
        "swan": {"frames": write_frames(root, "bulk/swan", "blackswan")},
        "draft": {"frames": write_frames(root, "bulk/cows", "cows")},
        "corrupt": {"frames": write_frames(root, "bulk/broken", "camel", corrupt=3)},
        "empty": {"frames": write_frames(root, "bulk/dog", "dog")},
    })  # fmt: skip
    videos = project(label_studio, "bulk-videos", VIDEO_CONFIG, {
        "scooter": {"video": write_video(root, "bulk/videos/scooter.webm", "scooter-black")},
        "car": {"video": write_video(root, "bulk/videos/car.webm", "car-roundabout")},
        "empty": {"video": write_video(root, "bulk/videos/goat.webm", "goat")},
    })  # fmt: skip
    t = images.tasks
    annotate(label_studio, t["car"], [click("car-shadow")])
    annotate(label_studio, t["swan"], [click("blackswan")])
    annotate(label_studio, t["corrupt"], [click("camel")])
    label_studio.client.post(f"/api/tasks/{t['draft']}/drafts",
                             {"result": [click("cows")], "lead_time": 1.0})  # fmt: skip
    annotate(label_studio, videos.tasks["scooter"], [box("scooter-black")])
    annotate(label_studio, videos.tasks["car"], [box("car-roundabout")])
    return BulkLS(label_studio, images, videos)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """One local Ray runtime (2 CPUs, no dashboard) for the tests of a module."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)  # fmt: skip
    try:
        yield ray
    finally:
        ray.shutdown()
