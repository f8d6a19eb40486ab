"""The web page in headless Chromium, driven as a user would: nothing but
the drop zone before a photo; a dropped photo comes back colorized beside
its gray input, with a divider, labels and a download link; an error keeps
the previous result; a TIFF (which the browser cannot show) still comes
back; an example photo works with one click.

Needs Debian's `chromium` and the `playwright` package, pointed at that
executable (no browser download); `.ci/run` installs both. Elsewhere:
  apt-get install chromium && pip install -e '.[test]'
"""

import base64
import io
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import helpers
from jaxcolor.inference import colorizer as colorizer_lib
from jaxcolor.web import app as app_lib
from jaxcolor.web import server as server_lib

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
  if os.environ.get("CI"):  # CI installs it: a skip there would hide a break.
    raise RuntimeError("CI without Chromium: .ci/run installs it.")
  pytest.skip("no Chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="pip install -e '.[test]'")

PHOTO = helpers.REPO / "jaxcolor" / "sample_data" / "eval" / "bsds_test_140006.jpg"
# Debian's Chromium runs as root only without its sandbox (CI runs as root).
ARGS = ["--no-sandbox"] if os.geteuid() == 0 else []


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  run = tmp_path_factory.mktemp("browser") / "run"
  helpers.make_checkpoint(helpers.load_config("configs/default.py"), run,
                          steps=(6,))
  colorizer = colorizer_lib.Colorizer.from_workdir(run)
  running = server_lib.start(app_lib.make_app(colorizer))
  yield running.url + "/", colorizer
  running.stop()


@pytest.fixture
def page(served):
  with sync_api.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    page = browser.new_page()
    page.goto(served[0])
    yield page
    browser.close()


def _drop(page, data: bytes, name: str, kind: str) -> None:
  """A drop event carrying a file, as a user's drag from the desktop."""
  page.evaluate("""([data, name, kind]) => {
    const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, {type: kind}));
    document.getElementById("drop").dispatchEvent(
        new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
  }""", [base64.b64encode(data).decode(), name, kind])


def _wait_done(page) -> str:
  page.wait_for_function(
      "() => !document.getElementById('message').textContent"
      ".startsWith('Colorizing')", timeout=60_000)
  return page.text_content("#message")


def _shown_result(page) -> np.ndarray:
  """The colorized image as the page shows it, read back from its URL."""
  png = page.evaluate("""async () => {
    const blob = await (await fetch(document.getElementById("after").src)).blob();
    const buffer = new Uint8Array(await blob.arrayBuffer());
    let text = ""; buffer.forEach(b => text += String.fromCharCode(b));
    return btoa(text);
  }""")
  return np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB"))


def test_before_a_photo_only_the_drop_zone_shows(page):
  assert page.title() == "jaxcolor: colorize a black-and-white photo"
  assert page.is_visible("#drop")
  for hidden in ("#compare", "#before", "#after", "#slider", "#download",
                 "#spinner"):
    assert not page.is_visible(hidden), hidden
  assert len(page.query_selector_all(".example img")) == 3


def test_a_dropped_photo_comes_back_colorized_and_an_error_keeps_it(
    page, served, tmp_path):
  _, colorizer = served
  _drop(page, PHOTO.read_bytes(), "photo.jpg", "image/jpeg")
  assert _wait_done(page).startswith("Done")
  for shown in ("#compare", "#before", "#after", "#slider", "#download",
                "#divider", ".label.left", ".label.right"):
    assert page.is_visible(shown), shown
  assert not page.is_visible("#spinner")
  assert page.get_attribute("#download", "download") == "photo_colorized.png"
  np.testing.assert_array_equal(_shown_result(page),
                                colorizer.colorize(Image.open(PHOTO)))
  page.fill("#slider", "30")
  page.dispatch_event("#slider", "input")
  assert page.evaluate("document.getElementById('divider').style.left") == "30%"
  page.screenshot(path=str(tmp_path / "page.png"))

  _drop(page, b"just some notes", "notes.txt", "text/plain")
  message = _wait_done(page)
  assert message.startswith("Error: not an image"), message
  assert page.is_visible("#compare") and page.is_visible("#download")
  assert page.get_attribute("#download", "download") == "photo_colorized.png"


def test_a_tiff_comes_back_though_the_browser_cannot_show_it(page):
  tiff = io.BytesIO()
  Image.open(PHOTO).convert("L").save(tiff, format="TIFF")
  _drop(page, tiff.getvalue(), "scan.tif", "image/tiff")
  assert _wait_done(page).startswith("Done")
  assert page.is_visible("#compare")
  assert page.get_attribute("#download", "download") == "scan_colorized.png"


def test_an_example_photo_is_one_click(page):
  page.click(".example >> nth=0")
  assert _wait_done(page).startswith("Done")
  assert page.get_attribute("#download", "download") == "jay_colorized.png"
