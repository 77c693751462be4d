"""Two-level cache of SAM image embeddings: a bounded in-memory LRU plus an optional directory.

Encoding one frame with SAM's ViT costs seconds on a CPU while the prompt decoder costs tens of
milliseconds, so every frame the annotator touches is encoded once and reused for all later
clicks, including after a server restart (disk level).

Entries are addressed by an opaque string key; :func:`entry_key` builds it from the caller's
``cache_key`` and the model identity so that two checkpoints never share an entry.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Embedding:
    """One encoded image: ``features`` 1×C×64×64 (on CPU), and the two sizes SAM needs to map
    prompts and masks between the native frame and its 1024-pixel input frame."""

    features: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]


def entry_key(cache_key: Hashable, model_id: str) -> str:
    """Stable hex digest naming ``cache_key`` encoded by the model ``model_id``.

    ``repr`` is used for the caller's key, so keys must have a deterministic repr (tuples of
    str/int do) for the disk level to hit across processes.
    """
    text = f"v{_FORMAT_VERSION}|{model_id}|{cache_key!r}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


class EmbeddingCache:
    """Thread-safe LRU of :class:`Embedding` (``max_items`` entries), backed by ``disk_dir``.

    ``disk_dir=None`` keeps the cache in memory only. Disk files are written atomically
    (temporary file in the same directory, then ``os.replace``); unreadable or mismatching
    files are treated as misses and removed. When a write brings the folder above
    ``max_disk_items`` files, the least recently written or read ones are deleted.
    """

    def __init__(
        self, max_items: int = 8, disk_dir: Path | None = None, max_disk_items: int | None = None
    ) -> None:
        if max_items < 0 or (max_disk_items is not None and max_disk_items < 1):
            raise ValueError("max_items must be >= 0 and max_disk_items >= 1")
        self.max_items = max_items
        self.max_disk_items = max_disk_items
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self._items: OrderedDict[str, Embedding] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        path = self._path(key)
        return key in self._items or (path is not None and path.exists())

    def get(self, key: str) -> Embedding | None:
        """The entry for ``key`` from memory, else from disk (then promoted to memory)."""
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        hit = self._read_disk(key)
        if hit is not None:
            self._remember(key, hit)
        return hit

    def put(self, key: str, embedding: Embedding) -> None:
        """Store ``embedding`` (moved to CPU) in memory and, when configured, on disk."""
        embedding = Embedding(
            features=embedding.features.detach().to("cpu").contiguous(),
            input_size=tuple(int(v) for v in embedding.input_size),
            original_size=tuple(int(v) for v in embedding.original_size),
        )
        self._remember(key, embedding)
        self._write_disk(key, embedding)

    def clear_memory(self) -> None:
        with self._lock:
            self._items.clear()

    def _remember(self, key: str, embedding: Embedding) -> None:
        if self.max_items == 0:
            return
        with self._lock:
            self._items[key] = embedding
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def _path(self, key: str) -> Path | None:
        return None if self.disk_dir is None else self.disk_dir / f"{key}.pt"

    def _write_disk(self, key: str, embedding: Embedding) -> None:
        path = self._path(key)
        if path is None:
            return
        payload = {
            "version": _FORMAT_VERSION,
            "key": key,
            "features": embedding.features,
            "input_size": list(embedding.input_size),
            "original_size": list(embedding.original_size),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    torch.save(payload, fh)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._prune_disk()
        except OSError as exc:  # a full or read-only disk must not break segmentation
            log.warning("could not write embedding cache file %s: %s", path, exc)

    def _prune_disk(self) -> None:
        if self.max_disk_items is None or self.disk_dir is None:
            return
        files = list(self.disk_dir.glob("*.pt"))
        if len(files) <= self.max_disk_items:
            return
        files.sort(key=lambda f: f.stat().st_mtime_ns)
        for old in files[: len(files) - self.max_disk_items]:
            old.unlink(missing_ok=True)

    def _read_disk(self, key: str) -> Embedding | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            ok = (
                isinstance(payload, dict)
                and payload.get("version") == _FORMAT_VERSION
                and payload.get("key") == key
                and isinstance(payload.get("features"), torch.Tensor)
                and payload["features"].dim() == 4
            )
            if not ok:
                raise ValueError("unexpected content")
            os.utime(path)  # mark as recently used for pruning
            return Embedding(
                features=payload["features"],
                input_size=(int(payload["input_size"][0]), int(payload["input_size"][1])),
                original_size=(int(payload["original_size"][0]), int(payload["original_size"][1])),
            )
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a miss
            log.warning("discarding unreadable embedding cache file %s: %s", path, exc)
            path.unlink(missing_ok=True)
            return None
