from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import ConfigError, Settings


def test_defaults_and_fallback_names():
    s = Settings.from_env(
        {"LABEL_STUDIO_HOST": "http://ls:8080/", "LABEL_STUDIO_ACCESS_TOKEN": "t"}
    )
    assert s.label_studio_url == "http://ls:8080" and s.label_studio_api_key == "t"
    assert s.engine == "auto" and s.device == "cpu" and s.internal_size == 480
    assert s.correction_reach == "back"
    assert Settings.from_env({"CORRECTION_REACH": "Forward"}).correction_reach == "forward"


def test_values_are_parsed():
    s = Settings.from_env(
        {
            "ENGINE": "Classical",
            "ALLOWED_MEDIA_HOSTS": "cdn.example.com, Media.Example.org",
            "VERIFY_SSL": "false",
            "MAX_FRAMES": "10",
            "MODEL_DIR": "state/models",
            "SAM_CHECKPOINT": "weights/sam.pth",
        }
    )
    assert s.engine == "classical" and not s.verify_ssl and s.max_frames == 10
    assert s.allowed_media_hosts == ("cdn.example.com", "media.example.org")
    assert s.sam_checkpoint == Path("weights/sam.pth")


@pytest.mark.parametrize(
    "env",
    [
        {"ENGINE": "gpu"},
        {"MAX_FRAMES": "lots"},
        {"MAX_FRAMES": "0"},
        {"VERIFY_SSL": "maybe"},
        {"SAM_MODEL_TYPE": "vit_x"},
        {"REFINE": "sometimes"},
        {"CORRECTION_REACH": "sideways"},
    ],
)
def test_bad_values_raise(env):
    with pytest.raises(ConfigError, match=next(iter(env))):
        Settings.from_env(env)


def test_secrets_are_masked():
    s = Settings.from_env({"LABEL_STUDIO_API_KEY": "secret-token", "BASIC_AUTH_PASS": "pw"})
    text = repr(s) + str(s.describe())
    assert "secret-token" not in text and "pw'" not in text
    frozen = pytest.raises(Exception)
    with frozen:
        s.engine = "x"  # type: ignore[misc]
