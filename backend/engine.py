"""Engine selection: which segmenter and tracker serve requests.

``auto`` picks, in this order: SAM 2 when ``SAM2_CHECKPOINT`` is set; SAM + XMem when both
``SAM_CHECKPOINT`` and ``XMEM_CHECKPOINT`` are; else the weights-free classical engine. A
configured but broken checkpoint is an error, never a silent fallback.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from backend import __version__
from backend.config import Settings
from backend.refine import RefineConfig
from backend.segmenter.base import Segmenter
from backend.tracker.base import Tracker

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """The requested engine cannot be built; the message says why and how to fix it."""


@dataclass(frozen=True)
class Engine:
    name: str  # "classical", "sam-xmem" or "sam2"
    segmenter: Segmenter
    tracker: Tracker
    model_version: str
    checkpoints: dict[str, str]  # what was loaded, for /health
    # TAM step 3: which propagated frames the segmenter re-segments (server, CLI, eval alike)
    refine: RefineConfig = field(default_factory=RefineConfig)
    # the longest a request waits for the segmenter before it is refused as busy (None: as
    # long as the request's own deadline allows)
    busy_timeout_s: float | None = None
    # the segmenter holds one image at a time: every set_image+predict pair takes this lock
    segmenter_lock: threading.RLock = field(default_factory=threading.RLock, compare=False)


def resolve_engine_name(settings: Settings) -> str:
    """The engine ``settings`` ask for, with ``auto`` resolved."""
    if settings.engine != "auto":
        return settings.engine
    if settings.sam2_checkpoint:
        return "sam2"
    if settings.sam_checkpoint and settings.xmem_checkpoint:
        return "sam-xmem"
    if settings.sam_checkpoint or settings.xmem_checkpoint:
        log.warning(
            "only one of SAM_CHECKPOINT / XMEM_CHECKPOINT is set; the SAM+XMem engine needs "
            "both, using the weights-free classical engine"
        )
    return "classical"


def build_classical(refine: RefineConfig | None = None) -> Engine:
    from backend.segmenter.classical import ClassicalSegmenter
    from backend.tracker.classical import ClassicalTracker

    return Engine(
        name="classical",
        segmenter=ClassicalSegmenter(),
        tracker=ClassicalTracker(),
        model_version=f"tam-classical-{__version__}",
        checkpoints={},
        refine=refine or RefineConfig(),
    )


def build_sam_xmem(settings: Settings) -> Engine:
    from backend.segmenter.sam import SamSegmenter
    from backend.tracker.xmem.tracker import XMemTracker

    missing = [
        name
        for name, path in (
            ("SAM_CHECKPOINT", settings.sam_checkpoint),
            ("XMEM_CHECKPOINT", settings.xmem_checkpoint),
        )
        if not path
    ]
    if missing:
        raise EngineError(f"ENGINE=sam-xmem needs {' and '.join(missing)}")
    try:
        segmenter = SamSegmenter(
            checkpoint=settings.sam_checkpoint,
            model_type=settings.sam_model_type,
            device=settings.device,
            cache_dir=settings.model_dir / "sam-embeddings",
        )
        tracker = XMemTracker(
            checkpoint=settings.xmem_checkpoint,
            device=settings.device,
            internal_size=settings.internal_size or None,
        )
    except Exception as exc:
        raise EngineError(f"cannot load the SAM+XMem checkpoints: {exc}") from exc
    return Engine(
        name="sam-xmem",
        segmenter=segmenter,
        tracker=tracker,
        model_version=f"tam-sam_{settings.sam_model_type}-xmem-{__version__}",
        checkpoints={
            "sam": str(settings.sam_checkpoint),
            "xmem": str(settings.xmem_checkpoint),
        },
        refine=refine_config(settings, "sam-xmem"),
    )


def build_sam2(settings: Settings) -> Engine:
    """SAM 2 / 2.1 (Meta's ``sam2`` package): one network segments the clicked frames and
    propagates (docs/weights.md). ``SAM2_MODEL`` defaults to what the official file name says."""
    from backend.sam2_engine.model import Sam2CheckpointError, model_from_filename

    if not settings.sam2_checkpoint:
        raise EngineError("ENGINE=sam2 needs SAM2_CHECKPOINT (python -m backend weights list)")
    model_name = settings.sam2_model or model_from_filename(settings.sam2_checkpoint)
    if not model_name:
        raise EngineError(
            f"SAM2_MODEL is not set and the file name {settings.sam2_checkpoint.name!r} does not "
            "say which model it is; set SAM2_MODEL (e.g. sam2.1_hiera_t)"
        )
    try:
        from backend.sam2_engine.model import Precision, load_model
        from backend.sam2_engine.segmenter import Sam2Segmenter
        from backend.sam2_engine.tracker import Sam2Tracker

        model = load_model(
            settings.sam2_checkpoint,
            model_name,
            device=settings.device,
            image_size=settings.sam2_image_size or None,
        )
    except ImportError as exc:
        raise EngineError(
            f"ENGINE=sam2 needs Meta's sam2 package ({exc}); see docs/weights.md"
        ) from None
    except Sam2CheckpointError as exc:
        raise EngineError(str(exc)) from None
    except Exception as exc:
        raise EngineError(f"cannot load the SAM 2 checkpoint: {exc}") from exc
    precision = Precision(model.device)
    return Engine(
        name="sam2",
        segmenter=Sam2Segmenter(model, precision),
        # the memory window keeps the state small, so it stays on the device (no offloading)
        tracker=Sam2Tracker(model, precision),
        model_version=f"tam-{model_name}-{__version__}",
        checkpoints={"sam2": str(settings.sam2_checkpoint)},
        refine=refine_config(settings, "sam2"),
    )


def load_custom_engine(spec: str, settings: Settings) -> Engine:
    """A custom engine from ``ENGINE=package.module:factory`` (``factory(settings) -> Engine``)."""
    import importlib

    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise EngineError(f"ENGINE={spec!r}: cannot import the factory ({exc})") from None
    engine = factory(settings)
    if not isinstance(engine, Engine):
        raise EngineError(f"ENGINE={spec!r}: the factory did not return an Engine")
    return engine


def build_engine(name: str = "auto", settings: Settings | None = None) -> Engine:
    """Build the engine called ``name`` (``auto``, ``classical``, ``sam-xmem``, or
    ``module:factory`` for a custom engine)."""
    settings = settings or Settings.from_env()
    if ":" in name:
        return load_custom_engine(name, settings)
    if name == "auto":
        name = resolve_engine_name(settings)
    if name == "classical":
        return build_classical(refine_config(settings, "classical"))
    if name == "sam-xmem":
        return build_sam_xmem(settings)
    if name == "sam2":
        return build_sam2(settings)
    raise EngineError(f"unknown engine {name!r}; expected auto, classical, sam-xmem or sam2")


def load_engine(
    settings: Settings, factory: Callable[[], Engine] | None = None
) -> tuple[Engine | None, str, str | None]:
    """``(engine, name, error)``: the engine ``settings`` ask for (or ``factory()``), or None
    with the reason when it cannot be built — reported, never replaced by another engine."""
    name = resolve_engine_name(settings)
    try:
        engine = (factory or (lambda: build_engine(name, settings)))()
    except EngineError as exc:
        log.error("engine %s failed to load: %s", name, exc)
        return None, name, str(exc)
    if settings.busy_timeout_s is not None and engine.busy_timeout_s is None:
        engine = dataclasses.replace(engine, busy_timeout_s=settings.busy_timeout_s)
    log.info("engine %s ready (model_version %s)", engine.name, engine.model_version)
    return engine, engine.name, None


def refine_config(settings: Settings, engine_name: str) -> RefineConfig:
    """Refinement policy: ``REFINE``/``REFINE_MAX_FRAMES`` when set, else per engine/device.

    Defaults, from measured costs (docs/benchmarks.md): with SAM on a GPU, poor
    frames are refined (``auto``, up to 20 per job; an encoding costs ~0.1 s).
    On a CPU a SAM ViT-B encoding costs ~17 s, more than three XMem frames, so
    refinement is off unless asked for (then 2 frames per job by default). The
    classical engine does not refine: its segmenter adds nothing over its
    tracker's own boundary refinement; nor does SAM 2, whose tracker is its segmenter
    with memory (its presence score marks lost frames instead).
    """
    on_gpu = settings.device.startswith("cuda")
    default = "auto" if engine_name == "sam-xmem" and on_gpu else "off"
    mode = settings.refine or default
    max_frames = settings.refine_max_frames
    if max_frames is None:
        max_frames = 20 if on_gpu else 2
    return RefineConfig(mode=mode, threshold=settings.quality_threshold, max_frames=max_frames)
