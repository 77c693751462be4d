"""The demo in a real browser (headless Chromium + chromedriver via Selenium), as a person uses it.

``test_click_accept_and_browse``: log in, open the demo task, turn on Auto-Annotation, pick the
smart keypoint tool and the label, click the swan, accept all suggestions, go to a later frame,
submit. Asserts the annotation holds one mask per frame (``item_index``) and, by pixels, that the
later frame shows its own mask. It also checks what the "cluster of black discs" under pending
suggestions is: one accept/reject control per suggestion (see docs/correcting-a-frame.md).

``test_click_on_mask_selects_region``: after "accept all", an Alt+click on a mask selects that
region and sends nothing; with the regions hidden and the keypoint label picked again, the same
click reaches the backend, alone (accepting removed the earlier click); accepting its answer
replaces the accepted masks (one region per frame after submit).

Every step is screenshotted into ``<tmp>/browser0/``; the path is written to the terminal.
Chromium and chromedriver come from the system (``apt-get install chromium chromium-driver``);
the browser resolves no host but 127.0.0.1 and the test fails if a page asks for any other.
``TAM_SKIP_E2E=1`` or ``TAM_SKIP_BROWSER=1`` skips it. ``TAM_DOC_IMAGES=<dir>`` also writes the
small PNGs used by docs/correcting-a-frame.md.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import ls_harness as h
import numpy as np
import pytest

from backend import demo

pytestmark = pytest.mark.e2e
log = logging.getLogger(__name__)

FRAMES = 30
SECOND_TASK_FRAMES = 20
WAIT_S = 60.0  # page elements
PREDICT_WAIT_S = 240.0  # one interactive call on a busy 2-core box
LABEL = "Object 1"
SUGGESTIONS_RE = re.compile(r"(\d+) suggestions?\b")


def _binary(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    return next((p for p in map(shutil.which, names) if p), None)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def running_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo.Demo]:
    """The demo (``make demo``) on free ports with its own data directory."""
    if os.environ.get("TAM_SKIP_E2E") == "1" or os.environ.get("TAM_SKIP_BROWSER") == "1":
        pytest.skip("browser test disabled on request (TAM_SKIP_E2E / TAM_SKIP_BROWSER)")
    ls_port = h.free_port()
    backend_port = h.free_port()
    opts = demo.DemoOptions(
        data_dir=tmp_path_factory.mktemp("demo"),
        ls_port=ls_port,
        backend_port=backend_port,
        frames=FRAMES,
        db_template=h.LS_DB_TEMPLATE,
        backend_env={"PREDICT_BUDGET_S": "90"},  # answer every frame at once, even when busy
    )
    try:
        h.ensure_label_studio()
        running = demo.start_demo(opts)
    except h.HarnessError as exc:
        pytest.fail(f"demo did not start: {exc}", pytrace=False)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def artifacts(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("browser")
    yield folder
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # shown even when output is captured
            reporter.write_line(f"\nbrowser test screenshots: {folder}")


@pytest.fixture(scope="module")
def driver(
    running_demo: demo.Demo, artifacts: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: make install (requirements-dev.txt)", pytrace=False)

    chrome = _binary("CHROME_BIN", "chromium", "chromium-browser", "google-chrome")
    chromedriver = _binary("CHROMEDRIVER", "chromedriver")
    if not chrome or not chromedriver:
        pytest.fail(
            "Chromium and chromedriver are needed (apt-get install chromium chromium-driver; "
            "or set CHROME_BIN / CHROMEDRIVER); TAM_SKIP_BROWSER=1 skips this test",
            pytrace=False,
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1600,1100",
        "--force-device-scale-factor=1",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # loopback only
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # network requests
    service = Service(executable_path=chromedriver, log_output=str(artifacts / "chromedriver.log"))
    drv = webdriver.Chrome(options=opts, service=service)  # no driver download: paths are given
    drv.set_page_load_timeout(120)
    try:
        yield drv
    finally:
        drv.quit()


# --------------------------------------------------------------------------- page object


@dataclass
class Requests:
    """What the page asked for, read from Chromium's performance log."""

    interactive: list[dict[str, Any]] = field(default_factory=list)  # request bodies
    external: list[str] = field(default_factory=list)  # URLs not on 127.0.0.1


@dataclass
class LabelingPage:
    """Label Studio's labeling page driven through the mouse and keyboard."""

    drv: Any
    ls: demo.Demo
    artifacts: Path
    seen: Requests = field(default_factory=Requests)
    step: int = 0

    # ---- plumbing

    def wait(self, what: str, cond: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
        from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        def check(_: Any) -> Any:
            try:
                return cond()
            except StaleElementReferenceException:
                return None

        try:
            return WebDriverWait(self.drv, timeout_s, poll_frequency=0.2).until(check)
        except TimeoutException:
            path = self.shot(f"timeout-{re.sub(r'[^a-z0-9]+', '-', what.lower())}")
            tail = h.log_tail(self.ls.backend.log_path, 30)
            pytest.fail(
                f"waited {timeout_s:.0f} s for {what}; screenshot {path}\nbackend log:\n{tail}",
                pytrace=False,
            )

    def css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.drv.find_elements(By.CSS_SELECTOR, selector)

    def one(self, selector: str, what: str) -> Any:
        return self.wait(what, lambda: next(iter(self.css(selector)), None))

    def shot(self, name: str) -> Path:
        """Screenshot the page as ``NN-name.png`` (mouse parked off the image first)."""
        self.step += 1
        path = self.artifacts / f"{self.step:02d}-{name}.png"
        self.drv.save_screenshot(str(path))
        log.info("screenshot %s", path)
        return path

    def drain(self) -> Requests:
        """Read new performance-log entries into ``self.seen``."""
        for entry in self.drv.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") != "Network.requestWillBeSent":
                continue
            req = msg["params"]["request"]
            url = str(req.get("url", ""))
            if "/interactive-annotating" in url:
                body = req.get("postData")
                self.seen.interactive.append(json.loads(body) if body else {})
            elif url.startswith(("http:", "https:", "ws:", "wss:")) and not url.startswith(
                ("http://127.0.0.1:", "ws://127.0.0.1:")
            ):
                self.seen.external.append(url)
        return self.seen

    def park_mouse(self) -> None:
        """Move the pointer to the task list on the left (no hover effects on the image)."""
        from selenium.webdriver.common.action_chains import ActionChains

        chain = ActionChains(self.drv)
        chain.w3c_actions.pointer_action.move_to_location(10, 300)
        chain.perform()

    # ---- navigation

    def login(self, creds: demo.LSCredentials) -> None:
        self.drv.get(f"{self.ls.label_studio.base_url}/user/login/")
        self.one("input[name=email]", "the login form").send_keys(creds.email)
        self.one("input[name=password]", "the password field").send_keys(creds.password)
        self.shot("login")
        self.one("button[type=submit], input[type=submit]", "the login button").click()
        self.wait("the login to finish", lambda: "/user/login" not in self.drv.current_url)

    def open_task(self, task_id: int, frames: int) -> None:
        url = f"{self.ls.label_studio.base_url}/projects/{self.ls.project_id}/data?task={task_id}"
        self.drv.get(url)
        self.wait(f"frame 1 of {frames}", lambda: self.page_indicator() == (1, frames))
        self.wait("the frame image", lambda: self.image_rect() is not None)

    def page_indicator(self) -> tuple[int, int] | None:
        found = self.css(".lsf-pagination__page-indicator")
        m = re.match(r"\s*(\d+)\s+of\s+(\d+)", found[0].text) if found else None
        return (int(m.group(1)), int(m.group(2))) if m else None

    def go_to_frame(self, number: int) -> None:
        """Page with the pager's arrows to frame ``number`` (1-based, as the pager shows it)."""
        while (pos := self.page_indicator()) and pos[0] != number:
            arrow = "right" if pos[0] < number else "left"
            sel = (
                f".lsf-pagination__btn_arrow-{arrow}:not(.lsf-pagination__btn_arrow-{arrow}-double)"
            )
            self.one(sel, f"the {arrow} arrow").click()
            self.wait(f"the pager to leave {pos[0]}", lambda p=pos: self.page_indicator() != p)
        self.wait(f"frame {number}", lambda: (self.page_indicator() or (0,))[0] == number)

    # ---- controls

    def bottom_bar_text(self) -> str:
        bars = self.css("[class*=bottombar]")
        return bars[0].text if bars else ""

    def suggestions(self) -> int:
        m = SUGGESTIONS_RE.search(self.bottom_bar_text())
        return int(m.group(1)) if m else 0

    def enable_auto_annotation(self) -> None:
        selector = "[data-testid=bottombar-auto-annotation-toggle]"

        # Both looked up inside a wait: the bottom bar may re-render between finding the
        # toggle and reading or clicking it (a stale element), and the wait then tries again.
        def switched_on() -> bool:
            toggle = next(iter(self.css(selector)), None)
            if toggle is None:
                return False
            if not toggle.is_selected():
                self.drv.execute_script("arguments[0].click()", toggle)  # input under a label
            return True

        def on() -> bool:
            return any(t.is_selected() for t in self.css(selector))

        self.wait("the Auto-Annotation toggle", switched_on)
        self.wait("Auto-Annotation on", on)

    def keypoint_label(self) -> Any:
        """The KeyPointLabels ``LABEL`` (the second row of labels: same names as the brush row)."""
        labels = [e for e in self.css(".lsf-label") if e.text.split("\n")[0].strip() == LABEL]
        return labels[1] if len(labels) > 1 else None

    def pick_keypoint_label(self) -> None:
        label = self.wait("the keypoint label", self.keypoint_label)
        if "lsf-label_selected" not in (label.get_attribute("class") or ""):
            label.click()
        self.wait(
            "the keypoint label selected",
            lambda: "lsf-label_selected" in (self.keypoint_label().get_attribute("class") or ""),
        )

    def pick_smart_keypoint_tool(self) -> None:
        """Hover the Auto-Detect (smart) tool and choose its keypoint variant."""
        from selenium.webdriver.common.action_chains import ActionChains

        smart = self.one("button.lsf-tool_smart:not([aria-label])", "the Auto-Detect tool")
        ActionChains(self.drv).move_to_element(smart).perform()
        kp = self.wait(
            "the smart keypoint tool",
            lambda: next(
                (
                    b
                    for b in self.css(".lsf-toolbar__smart button[aria-label=key-point-tool]")
                    if b.is_displayed()
                ),
                None,
            ),
        )
        kp.click()
        self.wait(
            "the smart keypoint tool active",
            lambda: (
                "lsf-tool_active"
                in (
                    self.css(".lsf-toolbar__smart button[aria-label=key-point-tool]")[
                        0
                    ].get_attribute("class")
                    or ""
                )
            ),
        )
        self.park_mouse()

    def image_rect(self) -> tuple[float, float, float, float] | None:
        """Where the frame is drawn on the page: ``(left, top, width, height)`` in CSS px.

        Label Studio zooms the frame slightly to fit and clips it to the stage, so this is the
        frame element's transformed box, not the canvas'.
        """
        rect = self.drv.execute_script(
            "const i = document.querySelector('img[alt=image]');"
            "if (!i || !i.complete || !i.naturalWidth) return null;"
            "const r = i.getBoundingClientRect(); return [r.left, r.top, r.width, r.height];"
        )
        return tuple(rect) if rect else None

    def to_page(self, x_px: float, y_px: float) -> tuple[float, float]:
        left, top, width, height = self.image_rect() or (0, 0, 0, 0)
        return left + x_px * width / h.FRAME_W, top + y_px * height / h.FRAME_H

    def click_frame(self, x_px: float, y_px: float, alt: bool = False) -> None:
        """Click frame pixel ``(x_px, y_px)``; ``alt``: Alt+click (a negative click)."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        x, y = self.to_page(x_px, y_px)
        chain = ActionChains(self.drv)
        if alt:
            chain.key_down(Keys.ALT)
        chain.w3c_actions.pointer_action.move_to_location(int(round(x)), int(round(y)))
        chain.click()
        if alt:
            chain.key_up(Keys.ALT)
        chain.perform()

    def wait_for_suggestions(self, before: int) -> int:
        """Wait for an interactive call after ``before`` calls and its suggestions; their count."""
        self.wait(
            "the click to reach Label Studio",
            lambda: len(self.drain().interactive) > before,
            PREDICT_WAIT_S,
        )
        return int(self.wait("the suggestions", self.suggestions, PREDICT_WAIT_S))

    def press(self, testid: str, what: str) -> None:
        self.one(f"[data-testid={testid}]", what).click()

    def selected_region_id(self) -> str | None:
        """The id the Info panel shows for the selected region (e.g. ``tam-o1-f9``), if any."""
        heads = self.css(".lsf-detailed-region__head")
        lines = heads[0].text.split("\n") if heads else []
        return lines[-1].strip() if lines and lines[-1].startswith("tam-") else None

    def suggestion_controls(self) -> dict[str, Any]:
        """Label Studio's per-suggestion accept/reject controls on the canvas (Konva layers).

        Each is a 64×32 black pill (the ✗ and ✓ buttons' icons in it) on its own layer; ``boxes``
        are their page rectangles ``[left, top, width, height]``, ``bottom`` the canvas' bottom.
        """
        return self.drv.execute_script(
            """
            const out = {pills: 0, icons_loaded: 0, icons: 0, fills: [], boxes: [], bottom: 0};
            for (const stage of Konva.stages) for (const layer of stage.getLayers()) {
              const pill = layer.find('Rect').filter(r => r.width() === 64 && r.height() === 32);
              if (!pill.length) continue;
              out.pills += 1; out.fills.push(pill[0].fill());
              const c = stage.container().getBoundingClientRect();
              const b = pill[0].getClientRect();
              out.boxes.push([c.left + b.x, c.top + b.y, b.width, b.height]);
              out.bottom = c.bottom;
              for (const im of layer.find('Image')) {
                out.icons += 1;
                const el = im.image();
                if (el && el.naturalWidth > 0) out.icons_loaded += 1;
              }
            }
            return out;
            """
        )


@pytest.fixture(scope="module")
def page(driver: Any, running_demo: demo.Demo, artifacts: Path) -> LabelingPage:
    p = LabelingPage(driver, running_demo, artifacts)
    p.login(running_demo.creds)
    return p


# --------------------------------------------------------------------------- helpers


def _gt_click(frame: int) -> tuple[float, float]:
    """The most interior point of the DAVIS ground truth: an unambiguous click on the swan."""
    gt = h.read_gt_mask(h.DAVIS_DIR / "Annotations/480p/blackswan" / f"{frame:05d}.png")
    return h.interior_point(gt)


def _redness(rgb: np.ndarray) -> np.ndarray:
    """How much red dominates each pixel (the brush colour of ``Object 1`` is #FF3B30)."""
    rgb = rgb.astype(np.int16)
    return rgb[..., 0] - np.maximum(rgb[..., 1], rgb[..., 2])


def _sample(shot_rgb: np.ndarray, rect: tuple, mask: np.ndarray, step: int = 3) -> np.ndarray:
    """Screenshot pixels at the frame pixels of ``mask`` (every ``step``-th, visible ones only)."""
    left, top, width, height = rect
    ys, xs = np.nonzero(mask)
    keep = (ys % step == 0) & (xs % step == 0)
    px = np.floor(left + (xs[keep] + 0.5) * width / h.FRAME_W).astype(int)
    py = np.floor(top + (ys[keep] + 0.5) * height / h.FRAME_H).astype(int)
    ok = (px >= 0) & (py >= 0) & (px < shot_rgb.shape[1]) & (py < shot_rgb.shape[0])
    return shot_rgb[py[ok], px[ok]]


def _red_fraction(pixels: np.ndarray) -> float:
    return float((_redness(pixels) > 50).mean()) if len(pixels) else float("nan")


def _doc_image(src: Path, name: str, crop: tuple[int, int, int, int] | None = None) -> None:
    """With ``TAM_DOC_IMAGES`` set: a small PNG of a screenshot (for docs/correcting-a-frame.md)."""
    out_dir = os.environ.get("TAM_DOC_IMAGES")
    if not out_dir:
        return
    from PIL import Image

    img = Image.open(src).convert("RGB")
    if crop:
        left, top, right, bottom = crop
        img = img.crop((max(0, left), max(0, top), min(img.width, right), min(img.height, bottom)))
    scale = min(1.0, 760 / img.width)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    img = img.quantize(colors=96, method=Image.Quantize.MEDIANCUT)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    img.save(Path(out_dir) / name, optimize=True)


def _brush_results(client: h.LSClient, task_id: int) -> list[dict[str, Any]]:
    annotations = client.get(f"/api/tasks/{task_id}/annotations")
    assert len(annotations) == 1, f"want one submitted annotation, got {len(annotations)}"
    return [r for r in annotations[0]["result"] if r["type"] == "brushlabels"]


# --------------------------------------------------------------------------- tests


def test_click_accept_and_browse(page: LabelingPage, running_demo: demo.Demo) -> None:
    t0 = time.monotonic()
    page.open_task(running_demo.task_id, FRAMES)
    page.enable_auto_annotation()
    page.pick_keypoint_label()
    page.pick_smart_keypoint_tool()
    page.shot("auto-annotation-smart-keypoint")

    x0, y0 = _gt_click(0)
    page.click_frame(x0, y0)
    count = page.wait_for_suggestions(before=0)
    assert count == FRAMES, f"{count} suggestions for {FRAMES} frames"
    page.park_mouse()
    pending = page.shot("suggestions-pending")
    _doc_image(pending, "correcting-pending-suggestions.png")

    # The "cluster of black discs": one accept/reject pill per pending suggestion, placed under
    # the bounding box of that suggestion's mask; all suggestions are drawn on the current frame.
    controls = page.suggestion_controls()
    log.info(
        "suggestion controls: %d pills, %d/%d icons loaded, boxes %s",
        controls["pills"],
        controls["icons_loaded"],
        controls["icons"],
        controls["boxes"],
    )
    assert controls["pills"] == count
    assert set(controls["fills"]) == {"#000"}
    boxes = np.array(controls["boxes"])
    left, top = boxes[:, :2].min(axis=0)
    right, bottom = (boxes[:, :2] + boxes[:, 2:]).max(axis=0)
    crop = (int(left) - 160, int(top) - 150, int(right) + 160, int(min(bottom, controls["bottom"])))
    _doc_image(pending, "correcting-black-discs.png", crop=crop)

    page.press("bottombar-accept-suggestions-button", "accept all suggestions")
    page.wait("the suggestions to be accepted", lambda: page.suggestions() == 0)
    page.wait("the controls to go", lambda: page.suggestion_controls()["pills"] == 0)
    page.park_mouse()
    page.shot("accepted-frame-1")

    later = 20
    page.go_to_frame(later)
    page.park_mouse()
    rect = page.image_rect()
    assert rect is not None
    later_shot = page.shot(f"accepted-frame-{later}")
    _doc_image(later_shot, "correcting-accepted-later-frame.png")

    page.press("bottombar-submit-button", "Submit")
    client = running_demo.client
    page.wait(
        "the annotation to be saved",
        lambda: len(client.get(f"/api/tasks/{running_demo.task_id}/annotations")) == 1,
    )
    page.shot("submitted")

    # Through the API: one mask per frame, each on its own frame (item_index), our label.
    brush = _brush_results(client, running_demo.task_id)
    assert sorted(r["item_index"] for r in brush) == list(range(FRAMES))
    assert {tuple(r["value"]["brushlabels"]) for r in brush} == {(LABEL,)}
    assert {r["id"] for r in brush} == {f"tam-o1-f{k}" for k in range(FRAMES)}
    masks = {r["item_index"]: h.decode_brush(r) > 0 for r in brush}

    # By pixels: frame `later` shows its own mask, and nothing red outside it.
    shot_rgb = cv2.cvtColor(cv2.imread(str(later_shot)), cv2.COLOR_BGR2RGB)
    raw_rgb = cv2.cvtColor(
        cv2.imread(
            str(running_demo.media_root / running_demo.clip / running_demo.frame_names[later - 1])
        ),
        cv2.COLOR_BGR2RGB,
    )
    mask = masks[later - 1].astype(np.uint8)
    kernel = np.ones((13, 13), np.uint8)
    inside = cv2.erode(mask, kernel) > 0
    outside = cv2.dilate(mask, kernel, iterations=2) == 0
    full = (0, 0, h.FRAME_W, h.FRAME_H)
    red_in = _red_fraction(_sample(shot_rgb, rect, inside))
    red_out = _red_fraction(_sample(shot_rgb, rect, outside))
    red_raw = _red_fraction(_sample(raw_rgb, full, inside, step=1))
    log.info("frame %d: red inside %.2f, outside %.2f, raw %.2f", later, red_in, red_out, red_raw)
    assert red_in >= 0.8, f"frame {later}: its mask is not drawn ({red_in:.2f} red)"
    assert red_out <= 0.05, f"frame {later}: red outside its mask ({red_out:.2f})"
    assert red_raw <= 0.2, "the frame itself is red there: the pixel check proves nothing"
    # Frame 1's mask, where it differs from this frame's, is not drawn here.
    only_first = (masks[0] & ~(cv2.dilate(mask, kernel) > 0)).astype(np.uint8)
    only_first = cv2.erode(only_first, np.ones((5, 5), np.uint8)) > 0
    if only_first.sum() >= 200:
        red_first = _red_fraction(_sample(shot_rgb, rect, only_first))
        assert red_first <= 0.2, f"frame 1's mask shows on frame {later} ({red_first:.2f})"

    assert page.drain().external == [], "the page asked for hosts other than 127.0.0.1"
    log.info("browser flow took %.1f s", time.monotonic() - t0)


def test_click_on_mask_selects_region(page: LabelingPage, running_demo: demo.Demo) -> None:
    """After "accept all": Alt+click on a mask selects it; hide the regions to send the click."""
    names = running_demo.frame_names[:SECOND_TASK_FRAMES]
    clip = running_demo.clip
    data = {"frames": [h.local_file_url(f"{clip}/{n}") for n in names], "video": clip}
    task_id = demo.ensure_task(running_demo.client, running_demo.project_id, data)
    page.open_task(task_id, SECOND_TASK_FRAMES)
    page.enable_auto_annotation()
    page.pick_keypoint_label()
    page.pick_smart_keypoint_tool()
    calls = len(page.drain().interactive)
    page.click_frame(*_gt_click(0))
    assert page.wait_for_suggestions(before=calls) == SECOND_TASK_FRAMES
    page.press("bottombar-accept-suggestions-button", "accept all suggestions")
    page.wait("the suggestions to be accepted", lambda: page.suggestions() == 0)

    frame = 10
    page.go_to_frame(frame)
    point = _gt_click(frame - 1)  # deep inside the swan: inside the accepted mask
    page.pick_keypoint_label()
    calls = len(page.drain().interactive)
    page.click_frame(*point, alt=True)
    region = page.wait("a region to be selected", page.selected_region_id)
    assert region == f"tam-o1-f{frame - 1}"
    assert len(page.drain().interactive) == calls, "the click on the mask was sent after all"
    page.park_mouse()
    selected = page.shot("alt-click-on-mask-selects-region")
    _doc_image(selected, "correcting-click-selects-region.png")

    from selenium.webdriver.common.keys import Keys

    page.drv.find_element("tag name", "body").send_keys(Keys.ESCAPE)
    page.wait("the region to be unselected", lambda: page.selected_region_id() is None)
    page.one("button[aria-label='Hide all regions']", "Hide all regions").click()
    page.pick_keypoint_label()
    page.click_frame(*point, alt=True)
    count = page.wait_for_suggestions(before=calls)
    assert count == SECOND_TASK_FRAMES
    page.park_mouse()
    sent = page.shot("hidden-regions-click-sent")
    _doc_image(sent, "correcting-hidden-regions-click.png")

    context = page.seen.interactive[-1]["context"]["result"]
    clicks = [(r["type"], r.get("item_index"), r.get("is_positive")) for r in context]
    # "Accept all" removed the first click: the correction arrives alone.
    assert clicks == [("keypointlabels", frame - 1, False)], clicks
    # Accepting again replaces the accepted masks (same region ids): no duplicates.
    page.press("bottombar-accept-suggestions-button", "accept all suggestions")
    page.wait("the suggestions to be accepted", lambda: page.suggestions() == 0)
    page.press("bottombar-submit-button", "Submit")
    client = running_demo.client
    page.wait(
        "the annotation to be saved",
        lambda: len(client.get(f"/api/tasks/{task_id}/annotations")) == 1,
    )
    brush = _brush_results(client, task_id)
    assert sorted(r["item_index"] for r in brush) == list(range(SECOND_TASK_FRAMES))
    assert sorted(r["id"] for r in brush) == sorted(
        f"tam-o1-f{k}" for k in range(SECOND_TASK_FRAMES)
    )
    assert page.drain().external == [], "the page asked for hosts other than 127.0.0.1"
