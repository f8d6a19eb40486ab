"""The web page in headless Chromium: a photo dropped on the page comes back
colorized beside its gray input, with a download link.

Needs Debian's `chromium` and the `playwright` package (no browser download:
Playwright drives the system Chromium); skipped with a message otherwise:
  apt-get install chromium && pip install playwright
"""

import base64
import io
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

import helpers
from jaxcolor import colorize
from jaxcolor import serve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
  pytest.skip("no Chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="pip install playwright")

PHOTO = helpers.REPO / "jaxcolor" / "sample_data" / "eval" / "bsds_test_140006.jpg"


@pytest.fixture(scope="module")
def url(tmp_path_factory):
  run = tmp_path_factory.mktemp("browser") / "run"
  helpers.make_checkpoint(helpers.load_config("configs/default.py"), run,
                          steps=(6,))
  colorizer = colorize.Colorizer.from_workdir(run)
  httpd = serve.make_server(colorizer, "127.0.0.1", 0)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  yield f"http://127.0.0.1:{httpd.server_address[1]}/", colorizer
  httpd.shutdown()


def test_a_dropped_photo_comes_back_colorized(url):
  url, colorizer = url
  photo = base64.b64encode(PHOTO.read_bytes()).decode()
  with sync_api.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM,
                                args=["--no-sandbox"])
    page = browser.new_page()
    page.goto(url)
    # A drop event carrying the photo, as a user's drag from the desktop.
    page.evaluate("""async (data) => {
      const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
      const file = new File([bytes], "photo.jpg", {type: "image/jpeg"});
      const transfer = new DataTransfer();
      transfer.items.add(file);
      document.getElementById("drop").dispatchEvent(
          new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
    }""", photo)
    page.wait_for_selector("#compare:not([hidden])", timeout=60_000)
    assert page.text_content("#status").startswith("Done")
    link = page.get_attribute("#download", "download")
    assert link == "photo_colorized.png"
    # The colorized image as the page shows it, read back from its blob URL.
    png = page.evaluate("""async () => {
      const blob = await (await fetch(document.getElementById("after").src)).blob();
      const buffer = new Uint8Array(await blob.arrayBuffer());
      let text = ""; buffer.forEach(b => text += String.fromCharCode(b));
      return btoa(text);
    }""")
    before = page.get_attribute("#before", "src")
    browser.close()
  rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB"))
  np.testing.assert_array_equal(rgb, colorizer.colorize(Image.open(PHOTO)))
  assert before.startswith("data:image/png")
