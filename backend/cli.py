"""``python -m backend <command>``: the offline command-line interface.

Each command lives in the module that owns its job and exposes
``add_arguments(parser)`` and ``main(args) -> int``; this file only wires them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command → (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("backend.eval.runner", "DAVIS J&F of an engine with simulated clicks"),
    "weights": ("backend.weights", "list, download and verify the official checkpoints"),
    "info": ("backend.cli_info", "show the settings and which engine would serve"),
    "import-video": ("backend.cli_import", "videos → JPEG frames → Label Studio frame tasks"),
    "segment": ("backend.cli_segment", "clicks on a video → per-frame masks, offline"),
    "export": ("backend.cli_export", "Label Studio masks → DAVIS / COCO / YouTube-VIS"),
    "bulk": ("backend.bulk.cli", "pre-annotate a whole Label Studio project on Ray"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backend",
        description="Track Anything for Label Studio: offline commands.",
    )
    parser.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
