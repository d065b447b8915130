"""The page in a real browser: headless Chromium (Debian `chromium` + `chromium-driver`) driven
by selenium through a text search and an upload. Skipped, with the reason, without them."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time

import pytest

CHROMIUM = next((p for p in (os.environ.get("SEARCHKIT_CHROMIUM"), "/usr/bin/chromium",
                             shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p and os.path.exists(p)), None)
DRIVER = next((p for p in (os.environ.get("SEARCHKIT_CHROMEDRIVER"), "/usr/bin/chromedriver",
               shutil.which("chromedriver")) if p and os.path.exists(p)), None)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=390,844")  # a phone-sized window

try:
    import selenium  # noqa: F401
    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

pytestmark = [
    pytest.mark.integration,     # a real server and a headless browser
    pytest.mark.skipif(not HAVE_SELENIUM, reason="selenium is not installed "
                       "(pip install selenium)"),
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="no headless browser: "
                       "apt-get install -y chromium chromium-driver"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(web_lib):
    import uvicorn

    from searchkit.web import create_app
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(web_lib.library), host="127.0.0.1",
                                        port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="searchkit-chromium-")
    for flag in FLAGS + (f"--user-data-dir={profile}",):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _cards(driver, timeout: float = 20):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#results .card img") and
        "results for" in d.find_element(By.ID, "message").text)
    return driver.find_elements(By.CSS_SELECTOR, "#results .card")


def _thumbs_loaded(driver) -> bool:
    return driver.execute_script(
        "return [...document.querySelectorAll('#results .card img')].slice(0, 4)"
        ".every(i => i.complete && i.naturalWidth > 0)")


def test_text_search_then_upload_then_more_like_this(server, browser, web_lib):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get(server + "/")
    WebDriverWait(browser, 20).until(
        lambda d: "13 images" in d.find_element(By.ID, "status").text)
    box = browser.find_element(By.ID, "q")
    box.send_keys("a red photo")
    browser.find_element(By.ID, "go").click()
    cards = _cards(browser)
    assert len(cards) == 13  # k=24 and the library holds 13 images
    scores = [float(c.find_element(By.CLASS_NAME, "score").text) for c in cards]
    assert scores == sorted(scores, reverse=True)
    WebDriverWait(browser, 20).until(_thumbs_loaded)
    assert "“a red photo”" in browser.find_element(By.ID, "message").text

    # upload: the uploaded picture comes back first, with a score of 1
    browser.execute_script("document.getElementById('results').replaceChildren();"
                           "document.getElementById('message').textContent = '';")
    box.clear()
    browser.find_element(By.ID, "file").send_keys(str(web_lib.png))
    cards = _cards(browser)
    top = cards[0]
    assert top.find_element(By.CLASS_NAME, "name").get_attribute("textContent") == "blue.png"
    assert top.find_element(By.CLASS_NAME, "score").text == "1.000"
    assert "your image" in browser.find_element(By.ID, "message").text

    # click a result: the viewer shows the full image and its metadata
    top.find_element(By.CSS_SELECTOR, "button.open").click()
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "viewer").get_attribute("open") is not None)
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "const i = document.getElementById('viewer-img'); return i.complete && i.naturalWidth"))
    meta = browser.find_element(By.ID, "viewer-meta").text
    assert str(web_lib.png) in meta and "64 × 32" in meta

    # "more like this" from the viewer: a new search around that image
    browser.execute_script("document.getElementById('message').textContent = '';")
    browser.find_element(By.ID, "viewer-like").click()
    cards = _cards(browser)
    assert cards[0].find_element(By.CLASS_NAME, "name").get_attribute("textContent") == \
        "blue.png"
    assert "images like blue.png" in browser.find_element(By.ID, "message").text
