"""A minimal Prometheus text-format registry (counters and latency histograms).

Per-process; with several gunicorn workers each reports its own numbers
(we run one worker per model by default, see docs/deployment.md).
"""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 100.0)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters, gauges and histograms rendered as Prometheus text."""

    def __init__(self, prefix: str = "tam"):
        self.prefix = prefix
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple, float]] = defaultdict(dict)
        self._gauges: dict[str, dict[tuple, float]] = defaultdict(dict)
        self._hist: dict[str, dict[tuple, list[float]]] = defaultdict(dict)
        self._help: dict[str, tuple[str, str]] = {}

    def _key(self, labels: dict[str, str]) -> tuple:
        return tuple(sorted(labels.items()))

    def inc(self, name: str, value: float = 1.0, help: str = "", **labels: str) -> None:
        with self._lock:
            self._help.setdefault(name, ("counter", help))
            k = self._key(labels)
            self._counters[name][k] = self._counters[name].get(k, 0.0) + value

    def set(self, name: str, value: float, help: str = "", **labels: str) -> None:
        with self._lock:
            self._help.setdefault(name, ("gauge", help))
            self._gauges[name][self._key(labels)] = value

    def observe(self, name: str, value: float, help: str = "", **labels: str) -> None:
        with self._lock:
            self._help.setdefault(name, ("histogram", help))
            k = self._key(labels)
            h = self._hist[name].setdefault(k, [0.0] * (len(BUCKETS) + 2))
            for i, b in enumerate(BUCKETS):
                if value <= b:
                    h[i] += 1
            h[-2] += 1  # count
            h[-1] += value  # sum

    def counter_value(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters[name].get(self._key(labels), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, (kind, help_text) in sorted(self._help.items()):
                full = f"{self.prefix}_{name}"
                lines.append(f"# HELP {full} {help_text or name}")
                lines.append(f"# TYPE {full} {kind}")
                if kind == "counter":
                    for k, v in sorted(self._counters[name].items()):
                        lines.append(f"{full}{_labels(dict(k))} {v:g}")
                elif kind == "gauge":
                    for k, v in sorted(self._gauges[name].items()):
                        lines.append(f"{full}{_labels(dict(k))} {v:g}")
                else:
                    for k, h in sorted(self._hist[name].items()):
                        base = dict(k)
                        for i, b in enumerate(BUCKETS):
                            lines.append(
                                f"{full}_bucket{_labels({**base, 'le': f'{b:g}'})} {h[i]:g}"
                            )
                        lines.append(f"{full}_bucket{_labels({**base, 'le': '+Inf'})} {h[-2]:g}")
                        lines.append(f"{full}_count{_labels(base)} {h[-2]:g}")
                        lines.append(f"{full}_sum{_labels(base)} {h[-1]:g}")
        return "\n".join(lines) + "\n"
