"""The image's HEALTHCHECK: exit 0 when GET /health on this container answers 200 with status UP.

Sends the basic-auth credentials when BASIC_AUTH_USER/BASIC_AUTH_PASS are set (then every
endpoint, /health included, asks for them). Standard library only.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.request


def main() -> int:
    port = os.environ.get("PORT", "9090")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/health")
    user, password = os.environ.get("BASIC_AUTH_USER"), os.environ.get("BASIC_AUTH_PASS")
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=4) as response:
            body = json.load(response)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"health check failed: {exc}\n")
        return 1
    return 0 if body.get("status") == "UP" else 1


if __name__ == "__main__":
    sys.exit(main())
