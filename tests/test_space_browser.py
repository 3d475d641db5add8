"""A real headless Chromium (Debian's, driven by Selenium) clicks through the Space to a finished run
and saves a screenshot to test-artifacts/space.png. Needs /usr/bin/chromium and /usr/bin/chromedriver
(.ci/run installs them with apt)."""

import shutil
import time
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROME, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (shutil.which(CHROME) and shutil.which(DRIVER)),
    reason="Debian chromium + chromium-driver not installed (apt-get install chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from spaces.ui import build_demo

    root = tmp_path_factory.mktemp("space-browser")
    demo = build_demo(str(root), state_dir=str(root / "state"), defaults={
        "domain": "code", "generator": "smollm2-135m-instruct-q4_1", "questions_per_chunk": 1,
        "sample_documents": 2,
    })
    demo.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROME
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={root / 'chrome'}", "--window-size=1400,2200"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.get(demo.local_url)
    yield driver
    driver.quit()
    demo.close()


def _click_tab(driver, label):
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button[role='tab']"):
        if button.text.strip() == label:
            button.click()
            return
    raise AssertionError(f"no tab {label!r}")


def _wait_text(driver, elem_id, needle, timeout):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        try:  # the page renders asynchronously and re-renders components
            text = driver.find_element(By.ID, elem_id).text
        except (NoSuchElementException, StaleElementReferenceException):
            text = ""
        if needle in text:
            return text
        time.sleep(1)
    raise AssertionError(f"{elem_id!r} never showed {needle!r}; last: {text!r}")


def test_click_through_ingest_and_generate(page):
    from selenium.webdriver.common.by import By

    driver = page
    _wait_text(driver, "job-status", "No job", 60)
    _click_tab(driver, "2 Data")
    driver.find_element(By.ID, "run-ingest").click()
    _wait_text(driver, "job-status", "ingest", 30)
    _wait_text(driver, "job-status", "finished", 300)

    _click_tab(driver, "3 Generate")
    driver.find_element(By.ID, "run-generate").click()
    _wait_text(driver, "job-status", "generate", 30)
    _wait_text(driver, "job-status", "finished", 600)
    table = _wait_text(driver, "sample-queries", "factual", 30)
    assert "factual" in table
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "space.png"))
    assert (ARTIFACTS / "space.png").stat().st_size > 10_000
