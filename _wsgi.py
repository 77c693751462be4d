"""Server entry point: ``python _wsgi.py`` (development) or ``gunicorn _wsgi:app``.

Loads settings from the environment, builds the engine once, and serves the
Label Studio ML backend protocol (see docs/architecture.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from backend.config import ConfigError, Settings
from backend.server.app import create_app

log = logging.getLogger("tam")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def build_app(settings: Settings | None = None):
    """The Flask app with the TAM model for ``settings`` (default: environment)."""
    from model import TrackAnythingModel

    settings = settings or Settings.from_env()
    model = TrackAnythingModel(settings)
    return create_app(settings, model, metrics=model.metrics)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Track Anything ML backend for Label Studio")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("PORT", "9090")))
    parser.add_argument(
        "--log-level",
        default=os.environ.get("LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
    )
    parser.add_argument("--debug", action="store_true", help="Flask debug mode (never in prod)")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return 2
    app = build_app(settings)
    log.info("serving on http://%s:%d", args.host, args.port)
    app.run(host=args.host, port=args.port, debug=args.debug, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
else:  # gunicorn _wsgi:app
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    app = build_app()
