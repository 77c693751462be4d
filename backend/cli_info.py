"""``python -m backend info``: effective settings and the engine that would serve."""

from __future__ import annotations

import argparse
import json

from backend.config import ConfigError, Settings
from backend.engine import resolve_engine_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def main(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}")
        return 2
    info = {"engine": resolve_engine_name(settings), "settings": settings.describe()}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"engine: {info['engine']}")
        for key, value in info["settings"].items():
            print(f"  {key} = {value}")
    return 0
