"""Bulk pre-annotation on Ray: 1 worker vs 2 workers side by side, and a 100-clip project.

Starts a real Label Studio 1.23.2 (``.ls-venv``, as the e2e tests do), creates an
image-sequence project of clips with one click each (real DAVIS frames, resized; or
``--synthetic`` frames: a moving disc on a texture), then runs ``backend.bulk`` on a local
Ray cluster once per worker count with the classical engine and prints frames/s and the
speedup. Workers read frames from the local-files root directly, as on a cluster with
shared storage; the task reads and prediction writes go through Label Studio's API.

    python bench/bulk.py                          # 12 DAVIS clips × 20 frames, 1 vs 2 workers
    python bench/bulk.py --clips 100 --frames 10 --synthetic --workers 2   # 100-clip project

Timings on a shared or small machine are noisy; Label Studio itself runs on the same CPUs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend import demo as h  # noqa: E402
from backend.config import Settings  # noqa: E402

CONFIG = (ROOT / "docs" / "labeling-config.xml").read_text()
DAVIS = h.DAVIS_DIR
SEQUENCES = ["blackswan", "car-shadow", "cows", "dog", "goat", "camel", "breakdance",
             "car-roundabout", "horsejump-high", "libby", "parkour", "scooter-black"]  # fmt: skip


def interior(mask: np.ndarray) -> tuple[float, float]:
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x) + 0.5, float(y) + 0.5


def davis_clip(folder: Path, seq: str, frames: int, size: tuple[int, int]):
    """Resized DAVIS frames of ``seq`` and a click inside its first ground-truth mask."""
    paths = sorted((DAVIS / "JPEGImages" / "480p" / seq).glob("*.jpg"))[:frames]
    for i, p in enumerate(paths):
        img = cv2.resize(cv2.imread(str(p)), size, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), img)
    gt = cv2.imread(str(sorted((DAVIS / "Annotations" / "480p" / seq).glob("*.png"))[0]), 0)
    return len(paths), interior(cv2.resize(gt, size, interpolation=cv2.INTER_NEAREST) > 127)


def synthetic_clip(folder: Path, seed: int, frames: int, size: tuple[int, int]):
    """A disc moving over a smooth random texture; the click is its centre on frame 0."""
    w, hh = size
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (hh // 4, w // 4, 3)).astype(np.float32)
    bg = np.clip(np.array([90, 110, 90]) + 25 * cv2.resize(noise, size), 0, 255).astype(np.uint8)
    r, x0, y0 = hh // 6, w // 3, hh // 2
    for i in range(frames):
        img = bg.copy()
        cv2.circle(img, (x0 + 3 * i, y0), r, (40, 60, 220), -1)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), img)
    return frames, (x0 + 0.5, y0 + 0.5)


def click_region(x: float, y: float, size: tuple[int, int]) -> dict:
    w, hh = size
    return {"original_width": w, "original_height": hh, "image_rotation": 0, "item_index": 0,
            "value": {"x": 100 * x / w, "y": 100 * y / hh, "width": 0.2,
                      "keypointlabels": ["Object 1"]},
            "is_positive": True, "id": "click", "from_name": "kp", "to_name": "image",
            "type": "keypointlabels", "origin": "manual"}  # fmt: skip


def make_project(client, media: Path, args) -> tuple[int, list[int], int]:
    """The project, its task ids and its total frame count."""
    size = (args.width, args.height)
    data = media / "bench"
    tasks, clicks, total = [], [], 0
    for k in range(args.clips):
        folder = data / f"clip{k:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        if args.synthetic:
            n, xy = synthetic_clip(folder, k, args.frames, size)
        else:
            n, xy = davis_clip(folder, SEQUENCES[k % len(SEQUENCES)], args.frames, size)
        total += n
        urls = [h.local_file_url(f"bench/clip{k:04d}/{i:05d}.jpg") for i in range(n)]
        tasks.append({"data": {"frames": urls}})
        clicks.append(xy)
    pid = int(client.post("/api/projects", {"title": "bench-bulk", "label_config": CONFIG})["id"])
    client.post("/api/storages/localfiles", {"project": pid, "path": str(data),
                                             "title": "bench", "use_blob_urls": False})  # fmt: skip
    client.post(f"/api/projects/{pid}/import", tasks)
    ids: list[int] = []
    page = 1
    while len(ids) < len(tasks):
        got = client.get("/api/tasks", params={"project": pid, "page": page, "page_size": 100})
        got = got["tasks"] if isinstance(got, dict) else got
        if not got:
            break
        ids += [int(t["id"]) for t in got]
        page += 1
    ids.sort()
    for tid, (x, y) in zip(ids, clicks, strict=True):
        client.post(f"/api/tasks/{tid}/annotations",
                    {"result": [click_region(x, y, size)], "lead_time": 1.0})  # fmt: skip
    return pid, ids, total


def run_once(settings: Settings, pid: int, ids: list[int], workers: int, force=True) -> dict:
    """One bulk run (all tasks recomputed unless not ``force``) on a fresh local Ray with 2
    CPUs."""
    import ray

    from backend.bulk.records import Outcome, TaskResult
    from backend.bulk.runner import BulkRun, RunOptions

    t0 = time.monotonic()
    ray.init(address="local", num_cpus=max(2, workers), include_dashboard=False, log_to_driver=False,
             configure_logging=False)  # fmt: skip
    try:
        run = BulkRun(settings, CONFIG, pid, RunOptions(workers=workers, force=force))
        t1 = time.monotonic()
        run.start_workers()
        t2 = time.monotonic()
        report = run.run(ids)
        run.stop_workers()
    finally:
        ray.shutdown()
    counts = report.counts()
    done = report.by_outcome(Outcome.DONE) or [TaskResult(0, Outcome.DONE)]
    return {"workers": workers, "ray_start_s": t1 - t0, "engines_s": t2 - t1,
            "run_s": report.seconds, "total_s": time.monotonic() - t0, "frames": report.frames,
            "fps": report.frames_per_s, "done": counts.get("done", 0),
            "failed": counts.get("failed", 0), "skipped": counts.get("skipped", 0),
            "read_s": float(np.mean([r.read_s for r in done])),
            "compute_s": float(np.mean([r.compute_s for r in done])),
            "write_s": float(np.mean([r.write_s for r in done])),
            "cpu_share": sum(r.cpu_s for r in done) / max(sum(r.seconds for r in done), 1e-9)}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--frames", type=int, default=20, help="frames per clip")
    ap.add_argument("--width", type=int, default=427)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--synthetic", action="store_true", help="synthetic frames, not DAVIS")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    ap.add_argument("--rerun", action="store_true", help="then rerun without --force (skips)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        media = work / "media"
        media.mkdir()
        creds = h.LSCredentials("bench@example.com", "bench-pass-not-secret-123")
        t0 = time.monotonic()
        template = h.LS_VENV / f"e2e-db-template-{h.LS_VERSION}.sqlite3"  # as the e2e tests
        proc = h.start_label_studio(h.ensure_label_studio(), work / "ls-data", media,
                                    work / "label-studio.log", creds, db_template=template)  # fmt: skip
        try:
            pat = h.get_personal_access_token(proc.base_url, creds)
            client = h.LSClient(proc.base_url, pat)
            t1 = time.monotonic()
            pid, ids, total = make_project(client, media, args)
            print(f"Label Studio up in {t1 - t0:.1f} s; project of {len(ids)} clips, {total} "
                  f"frames ({args.width}x{args.height}) made in {time.monotonic() - t1:.1f} s")  # fmt: skip
            settings = Settings.from_env({
                "LABEL_STUDIO_URL": proc.base_url, "LABEL_STUDIO_API_KEY": pat,
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(media),
                "MODEL_DIR": str(work / "model"), "ENGINE": "classical"})  # fmt: skip
            rows = [run_once(settings, pid, ids, w) for w in counts]
            rerun = run_once(settings, pid, ids, counts[-1], force=False) if args.rerun else None
        finally:
            proc.stop()
    base = rows[0]["fps"] or 1e-9
    print(f"\n{'workers':>7} {'ray s':>6} {'engines s':>9} {'run s':>7} {'total s':>8} "
          f"{'frames':>7} {'frames/s':>9} {'speedup':>8} {'done':>5} {'failed':>6} "
          f"{'task: read s':>12} {'compute s':>9} {'write s':>7} {'cpu/wall':>8}")  # fmt: skip
    for r in rows:
        print(f"{r['workers']:>7} {r['ray_start_s']:>6.1f} {r['engines_s']:>9.1f} "
              f"{r['run_s']:>7.1f} {r['total_s']:>8.1f} {r['frames']:>7} {r['fps']:>9.2f} "
              f"{r['fps'] / base:>7.2f}x {r['done']:>5} {r['failed']:>6} "
              f"{r['read_s']:>12.2f} {r['compute_s']:>9.2f} {r['write_s']:>7.2f} "
              f"{r['cpu_share']:>8.2f}")  # fmt: skip
    print(
        "run s: dispatch to the last result (frames/s = frames / run s); total s adds "
        "starting Ray and loading the engines; per task (means): read, compute, write seconds "
        "and the CPU time its worker got per second of wall time (1.0 = a whole core)"
    )
    if rerun is not None:
        print(f"rerun without --force ({rerun['workers']} workers): {rerun['skipped']} of "
              f"{len(ids)} tasks skipped in {rerun['run_s']:.1f} s (total {rerun['total_s']:.1f} s)")  # fmt: skip
    return 0 if all(r["failed"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
