"""Settings read once from the environment into a frozen dataclass.

Every knob of the service lives here, with its environment variable, default
and meaning; nothing else in the package reads ``os.environ``. Build with
:meth:`Settings.from_env` and pass the object down; it is never mutated.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

ENGINES = ("auto", "classical", "sam-xmem", "sam2")
SAM2_MODELS = (
    "sam2.1_hiera_t",
    "sam2.1_hiera_s",
    "sam2.1_hiera_b+",
    "sam2.1_hiera_l",
    "sam2_hiera_t",
    "sam2_hiera_s",
    "sam2_hiera_b+",
    "sam2_hiera_l",
)
SAM_MODEL_TYPES = ("vit_b", "vit_l", "vit_h")
REFINE_MODES = ("off", "auto", "always")
CORRECTION_REACHES = ("back", "forward")
"""back: a correction also re-propagates back to the previous keyframe (blended); forward: the
frames before it are kept."""
MEDIA_REDIRECTS = ("same-origin", "off")


class ConfigError(ValueError):
    """An environment variable has an invalid value."""


def _bool(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={value!r}: expected true/false")


def _int(value: str, name: str, minimum: int | None = None) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected an integer") from None
    if minimum is not None and n < minimum:
        raise ConfigError(f"{name}={n}: must be >= {minimum}")
    return n


def _float(value: str, name: str, minimum: float | None = None) -> float:
    try:
        x = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected a number") from None
    if minimum is not None and x < minimum:
        raise ConfigError(f"{name}={x}: must be >= {minimum}")
    return x


def _choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    v = value.strip().lower()
    if v not in choices:
        raise ConfigError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return v


def _engine(value: str) -> str:
    """An engine name, or ``module:factory`` for a custom engine (see backend/engine.py)."""
    if ":" in value.strip():
        return value.strip()
    return _choice(value, "ENGINE", ENGINES)


def _path(value: str) -> Path | None:
    return Path(value).expanduser() if value.strip() else None


def _hosts(value: str) -> tuple[str, ...]:
    return tuple(h.strip().lower() for h in value.split(",") if h.strip())


@dataclass(frozen=True)
class Settings:
    """All service settings. Field metadata ``env`` names the variable."""

    label_studio_url: str = field(default="", metadata={"env": "LABEL_STUDIO_URL"})
    label_studio_api_key: str = field(
        default="", repr=False, metadata={"env": "LABEL_STUDIO_API_KEY"}
    )
    local_files_root: Path | None = field(
        default=None, metadata={"env": "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"}
    )
    allowed_media_hosts: tuple[str, ...] = field(
        default=(), metadata={"env": "ALLOWED_MEDIA_HOSTS"}
    )
    verify_ssl: bool = field(default=True, metadata={"env": "VERIFY_SSL"})
    media_timeout_s: float = field(default=30.0, metadata={"env": "MEDIA_TIMEOUT_S"})
    max_media_bytes: int = field(default=64 * 1024 * 1024, metadata={"env": "MAX_MEDIA_BYTES"})
    media_redirects: str = field(default="same-origin", metadata={"env": "MEDIA_REDIRECTS"})
    max_video_bytes: int = field(default=2 * 1024**3, metadata={"env": "MAX_VIDEO_BYTES"})
    video_timeout_s: float = field(default=600.0, metadata={"env": "VIDEO_TIMEOUT_S"})
    max_frames: int = field(default=2000, metadata={"env": "MAX_FRAMES"})
    max_frame_pixels: int = field(default=3840 * 2160, metadata={"env": "MAX_FRAME_PIXELS"})
    frame_cache_size: int = field(default=64, metadata={"env": "FRAME_CACHE_SIZE"})
    session_cache_mb: float = field(default=512.0, metadata={"env": "SESSION_CACHE_MB"})
    correction_reach: str = field(default="back", metadata={"env": "CORRECTION_REACH"})

    engine: str = field(default="auto", metadata={"env": "ENGINE"})
    sam_checkpoint: Path | None = field(default=None, metadata={"env": "SAM_CHECKPOINT"})
    sam_model_type: str = field(default="vit_b", metadata={"env": "SAM_MODEL_TYPE"})
    xmem_checkpoint: Path | None = field(default=None, metadata={"env": "XMEM_CHECKPOINT"})
    sam2_checkpoint: Path | None = field(default=None, metadata={"env": "SAM2_CHECKPOINT"})
    sam2_model: str = field(default="", metadata={"env": "SAM2_MODEL"})  # "" = from file name
    sam2_image_size: int = field(default=0, metadata={"env": "SAM2_IMAGE_SIZE"})  # 0 = config's
    device: str = field(default="cpu", metadata={"env": "DEVICE"})
    internal_size: int = field(default=480, metadata={"env": "INTERNAL_SIZE"})
    refine: str = field(default="", metadata={"env": "REFINE"})  # "" = engine default
    refine_max_frames: int | None = field(default=None, metadata={"env": "REFINE_MAX_FRAMES"})
    quality_threshold: float = field(default=0.5, metadata={"env": "QUALITY_THRESHOLD"})
    model_dir: Path = field(default=Path("model_dir"), metadata={"env": "MODEL_DIR"})

    predict_budget_s: float = field(default=60.0, metadata={"env": "PREDICT_BUDGET_S"})
    busy_timeout_s: float | None = field(default=None, metadata={"env": "BUSY_TIMEOUT_S"})
    job_workers: int = field(default=1, metadata={"env": "JOB_WORKERS"})
    max_concurrent_predicts: int = field(default=4, metadata={"env": "MAX_CONCURRENT_PREDICTS"})

    basic_auth_user: str = field(default="", metadata={"env": "BASIC_AUTH_USER"})
    basic_auth_pass: str = field(default="", repr=False, metadata={"env": "BASIC_AUTH_PASS"})
    max_request_bytes: int = field(default=64 * 1024 * 1024, metadata={"env": "MAX_REQUEST_BYTES"})
    label_config_max_bytes: int = field(
        default=256 * 1024, metadata={"env": "LABEL_CONFIG_MAX_BYTES"}
    )
    log_level: str = field(default="INFO", metadata={"env": "LOG_LEVEL"})

    @property
    def basic_auth_enabled(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_pass)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``env`` (default ``os.environ``); raise ConfigError on bad values."""
        env = os.environ if env is None else env
        get = env.get
        url = get("LABEL_STUDIO_URL") or get("LABEL_STUDIO_HOST") or ""
        key = get("LABEL_STUDIO_API_KEY") or get("LABEL_STUDIO_ACCESS_TOKEN") or ""
        d = cls()
        values: dict[str, object] = {
            "label_studio_url": url.strip().rstrip("/"),
            "label_studio_api_key": key.strip(),
            "local_files_root": _path(get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", "")),
            "allowed_media_hosts": _hosts(get("ALLOWED_MEDIA_HOSTS", "")),
            "verify_ssl": _bool(get("VERIFY_SSL", "true"), "VERIFY_SSL"),
            "media_timeout_s": _float(
                get("MEDIA_TIMEOUT_S", str(d.media_timeout_s)), "MEDIA_TIMEOUT_S", 0.1
            ),
            "max_media_bytes": _int(
                get("MAX_MEDIA_BYTES", str(d.max_media_bytes)), "MAX_MEDIA_BYTES", 1024
            ),
            "media_redirects": _choice(
                get("MEDIA_REDIRECTS", d.media_redirects), "MEDIA_REDIRECTS", MEDIA_REDIRECTS
            ),
            "max_video_bytes": _int(
                get("MAX_VIDEO_BYTES", str(d.max_video_bytes)), "MAX_VIDEO_BYTES", 1024
            ),
            "video_timeout_s": _float(
                get("VIDEO_TIMEOUT_S", str(d.video_timeout_s)), "VIDEO_TIMEOUT_S", 1.0
            ),
            "max_frames": _int(get("MAX_FRAMES", str(d.max_frames)), "MAX_FRAMES", 1),
            "max_frame_pixels": _int(
                get("MAX_FRAME_PIXELS", str(d.max_frame_pixels)), "MAX_FRAME_PIXELS", 1
            ),
            "frame_cache_size": _int(
                get("FRAME_CACHE_SIZE", str(d.frame_cache_size)), "FRAME_CACHE_SIZE", 0
            ),
            "session_cache_mb": _float(
                get("SESSION_CACHE_MB", str(d.session_cache_mb)), "SESSION_CACHE_MB", 0.0
            ),
            "correction_reach": _choice(
                get("CORRECTION_REACH", d.correction_reach), "CORRECTION_REACH", CORRECTION_REACHES
            ),
            "engine": _engine(get("ENGINE", d.engine)),
            "sam_checkpoint": _path(get("SAM_CHECKPOINT", "")),
            "sam_model_type": _choice(
                get("SAM_MODEL_TYPE", d.sam_model_type), "SAM_MODEL_TYPE", SAM_MODEL_TYPES
            ),
            "xmem_checkpoint": _path(get("XMEM_CHECKPOINT", "")),
            "sam2_checkpoint": _path(get("SAM2_CHECKPOINT", "")),
            "sam2_model": (
                _choice(get("SAM2_MODEL", ""), "SAM2_MODEL", SAM2_MODELS)
                if get("SAM2_MODEL", "").strip()
                else ""
            ),
            "sam2_image_size": _int(get("SAM2_IMAGE_SIZE", "0"), "SAM2_IMAGE_SIZE", 0),
            "device": (get("DEVICE", d.device).strip() or "cpu"),
            "internal_size": _int(get("INTERNAL_SIZE", str(d.internal_size)), "INTERNAL_SIZE", 0),
            "refine": _choice(get("REFINE"), "REFINE", REFINE_MODES) if get("REFINE") else "",
            "refine_max_frames": (
                _int(get("REFINE_MAX_FRAMES", ""), "REFINE_MAX_FRAMES", 0)
                if get("REFINE_MAX_FRAMES")
                else None
            ),
            "quality_threshold": _float(
                get("QUALITY_THRESHOLD", str(d.quality_threshold)), "QUALITY_THRESHOLD", 0.0
            ),
            "model_dir": Path(get("MODEL_DIR", str(d.model_dir))).expanduser(),
            "predict_budget_s": _float(
                get("PREDICT_BUDGET_S", str(d.predict_budget_s)), "PREDICT_BUDGET_S", 0.0
            ),
            "busy_timeout_s": (
                _float(get("BUSY_TIMEOUT_S", ""), "BUSY_TIMEOUT_S", 0.0)
                if get("BUSY_TIMEOUT_S")
                else None
            ),
            "job_workers": _int(get("JOB_WORKERS", str(d.job_workers)), "JOB_WORKERS", 1),
            "max_concurrent_predicts": _int(
                get("MAX_CONCURRENT_PREDICTS", str(d.max_concurrent_predicts)),
                "MAX_CONCURRENT_PREDICTS",
                1,
            ),
            "basic_auth_user": get("BASIC_AUTH_USER", ""),
            "basic_auth_pass": get("BASIC_AUTH_PASS", ""),
            "max_request_bytes": _int(
                get("MAX_REQUEST_BYTES", str(d.max_request_bytes)), "MAX_REQUEST_BYTES", 1024
            ),
            "label_config_max_bytes": _int(
                get("LABEL_CONFIG_MAX_BYTES", str(d.label_config_max_bytes)),
                "LABEL_CONFIG_MAX_BYTES",
                1024,
            ),
            "log_level": get("LOG_LEVEL", d.log_level).strip().upper() or "INFO",
        }
        return cls(**values)  # type: ignore[arg-type]

    def describe(self) -> dict[str, object]:
        """Settings as a JSON-friendly dict with secrets masked (for logs and /health)."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("label_studio_api_key", "basic_auth_pass"):
                value = "***" if value else ""
            elif isinstance(value, Path):
                value = str(value)
            out[f.metadata.get("env", f.name)] = value
        return out
