"""Screenshots of the web page with real results, for the docs.

    python docs/make_screenshot.py [--model searchkit-lite] [--folder DIR] [--query TEXT]
                                   [--image FILE] [--library DIR]

Indexes ``--folder`` into ``--library`` (incremental: a second run is quick), serves it with
``searchkit serve`` and drives headless Chromium (Debian ``chromium`` + ``chromium-driver``)
through a text search, saving ``docs/web-page.png`` (desktop) and ``docs/web-page-phone.png``
(a phone-sized window after an image upload).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_api import Server  # noqa: E402

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


def index(library: Path, folder: Path, model: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "searchkit.cli.main", "index", str(folder), "--library",
                    str(library), "--model", model], cwd=ROOT, env=env, check=True)


def browser(width: int, height: int):
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for f in FLAGS + (f"--window-size={width},{height}",
                      f"--user-data-dir={tempfile.mkdtemp(prefix='shot-')}"):
        opts.add_argument(f)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    if width < 500:  # below headless Chromium's smallest window: emulate a phone
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": True})
    return driver


def wait_results(driver) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, 60).until(
        lambda d: "results for" in d.find_element(By.ID, "message").text)
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#results img')].slice(0, 12)"
        ".every(i => i.complete && i.naturalWidth > 0)"))
    time.sleep(0.3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="searchkit-lite")
    ap.add_argument("--folder", type=Path,
                    default=Path("/work/shared/datasets/align/validation"))
    ap.add_argument("--library", type=Path, default=Path(tempfile.gettempdir()) / "shot-lib")
    ap.add_argument("--query", default="a red apple")
    ap.add_argument("--image", type=Path, help="query image for the phone shot")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    from selenium.webdriver.common.by import By
    index(args.library, args.folder, args.model)
    server = Server(args.library)
    try:
        d = browser(1280, 860)
        d.get(server.url + "/")
        d.find_element(By.ID, "q").send_keys(args.query)
        d.find_element(By.ID, "go").click()
        wait_results(d)
        d.save_screenshot(str(args.out / "web-page.png"))
        d.quit()
        image = args.image or next(args.folder.rglob("*.jpg"))
        d = browser(390, 844)
        d.get(server.url + "/")
        d.find_element(By.ID, "file").send_keys(str(image))
        wait_results(d)
        d.save_screenshot(str(args.out / "web-page-phone.png"))
        d.quit()
        st = httpx.get(server.url + "/api/status").json()
        print(f"saved {args.out}/web-page.png and web-page-phone.png: model {st['model_name']},"
              f" {st['indexed']} images from {args.folder}; query {args.query!r}, "
              f"phone upload {image}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
