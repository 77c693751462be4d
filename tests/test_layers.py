"""The import structure: no module imports upward, and the bottom imports no HTTP or evaluation.

Layers, lowest first (a module may import its own layer and those below):

0. bottom — frames, masks, types, config, video decoding, overlays
1. engines — segmenters, trackers, refinement, engine selection, the pipeline
2. session — the interactive session, background jobs, running a plan within a budget
3. Label Studio — ``backend.ls``: label configs, prompts, results, RLE, client, media, export
4. front ends — the HTTP server, evaluation, the command line, weights download
5. bulk — ``backend.bulk``: a whole project on Ray (a front end nothing else imports)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS: list[tuple[str, ...]] = [
    ("backend", "backend.types", "backend.frames", "backend.masks", "backend.config",
     "backend.video", "backend.overlay", "backend.state_dicts"),
    ("backend.segmenter", "backend.tracker", "backend.sam2_engine", "backend.refine",
     "backend.engine", "backend.pipeline"),
    ("backend.session", "backend.jobs", "backend.runs"),
    ("backend.ls",),
    ("backend.server", "backend.eval", "backend.cli", "backend.cli_import", "backend.cli_export",
     "backend.cli_segment", "backend.cli_info", "backend.weights", "backend.__main__",
     "backend.demo"),
    ("backend.bulk",),
]  # fmt: skip
HTTP = ("requests", "httpx", "urllib.request", "flask", "werkzeug", "label_studio_sdk")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    """The layer of a module: the longest matching prefix decides."""
    best, depth = -1, -1
    for k, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > depth:
                best, depth = k, len(p)
    return best


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]
    return out


SOURCES = sorted((ROOT / "backend").rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_no_upward_imports(path):
    me = module_name(path)
    mine = layer(me)
    assert mine >= 0, f"{me} is in no layer: add it to LAYERS"
    upward = [
        name
        for name in imports(path)
        if name.startswith("backend.") and layer(name) > mine and name != "backend.__version__"
    ]
    assert not upward, f"{me} (layer {mine}) imports upward: {upward}"
    if mine == 0:
        http = [n for n in imports(path) if n.split(".")[0] in {h.split(".")[0] for h in HTTP}]
        http = [n for n in http if any(n == h or n.startswith(h + ".") for h in HTTP)]
        assert not http, f"{me} is a bottom module but imports HTTP: {http}"


def test_the_layer_check_can_fail():
    assert layer("backend.session") > layer("backend.pipeline")
    assert layer("backend.ls.results") > layer("backend.session")
    assert layer("backend.tracker.xmem.core") == 1 and layer("backend.masks") == 0


def test_engines_and_session_load_no_http_and_no_evaluation():
    code = (
        "import sys; import backend.session, backend.tracker.classical, backend.frames;"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('requests', 'httpx', 'flask', 'label_studio_sdk') or m.startswith('backend.eval') "
        "or m.startswith('backend.ls')]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_only_bulk_imports_ray():
    """Ray is a dependency of the bulk front end alone: no engine, session or server code."""
    bad = [
        module_name(p)
        for p in SOURCES
        if layer(module_name(p)) < layer("backend.bulk")
        and any(n == "ray" or n.startswith("ray.") for n in imports(p))
    ]
    assert not bad, f"only backend.bulk may import ray: {bad}"
