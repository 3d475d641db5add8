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


def _driver(profile_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROME
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile_dir}", "--window-size=1400,2400"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """The Space and two browsers with their own profiles: two visitors, two anonymous sessions."""
    from spaces.ui import build_demo

    root = tmp_path_factory.mktemp("space-browser")
    demo = build_demo(root, defaults={
        "domain": "code", "generator": "smollm2-135m-instruct-q4_1", "questions_per_chunk": 1,
        "sample_documents": 2,
    })
    demo.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    a, b = _driver(root / "chrome-a"), _driver(root / "chrome-b")
    a.get(demo.local_url)
    b.get(demo.local_url)
    yield demo, a, b
    a.quit()
    b.quit()
    demo.close()


def _click_tab(driver, label):
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button[role='tab']"):
        if button.text.strip() == label:
            button.click()
            return
    raise AssertionError(f"no tab {label!r}")


def _text(driver, elem_id):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:  # the page renders asynchronously and re-renders components
        return driver.find_element(By.ID, elem_id).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def _wait_text(driver, elem_id, needle, timeout):
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = _text(driver, elem_id)
        if needle in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"{elem_id!r} never showed {needle!r}; last: {text!r}")


def _advanced(driver, value=None):
    """The Advanced box's text (opening the accordion); with ``value``, type it in first."""
    from selenium.webdriver.common.by import By

    box = driver.find_elements(By.CSS_SELECTOR, "#advanced textarea")
    if not box or not box[0].is_displayed():
        for el in driver.find_elements(By.CSS_SELECTOR, "button, span, div.label-wrap"):
            if el.text.strip().startswith("Advanced settings") and el.is_displayed():
                el.click()
                break
        time.sleep(0.5)
        box = driver.find_elements(By.CSS_SELECTOR, "#advanced textarea")
    if value is not None:
        box[0].clear()
        box[0].send_keys(value)
        time.sleep(0.5)
    return box[0].get_attribute("value")


def _shot(driver, name):
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / name))
    assert (ARTIFACTS / name).stat().st_size > 10_000


def test_two_visitors_reload_confirm_and_progress(space):
    """Visitor A ingests; visitor B sees no job and cannot cancel A's. A reload restores A's settings;
    a changed chunking setting asks before redoing the finished ingest (and keeps it when told to).
    A's generate shows a progress bar that advances, then the sample queries."""
    from selenium.webdriver.common.by import By

    demo, a, b = space
    _wait_text(a, "job-status", "No job", 60)
    _wait_text(b, "job-status", "No job", 60)
    _advanced(a, "mine.candidates=30")
    _click_tab(a, "2 Data")
    a.find_element(By.ID, "run-ingest").click()
    _wait_text(a, "job-status", "ingest", 30)
    assert "No job yet" in _text(b, "job-status")  # B sees nothing of A's job ...
    b.find_element(By.ID, "cancel").click()
    _wait_text(b, "notice", "No job", 20)  # ... and its Cancel has nothing to cancel
    _wait_text(a, "job-status", "finished", 300)
    assert "No job yet" in _text(b, "job-status")

    a.refresh()  # a reload: the same session, its settings back from the run's config
    _wait_text(a, "job-status", "finished", 60)
    assert "mine.candidates=30" in _advanced(a)
    _advanced(a, "mine.candidates=30\ningest.chunk_sentences=3")
    _click_tab(a, "2 Data")
    a.find_element(By.ID, "run-ingest").click()
    note = _wait_text(a, "notice", "differ from your finished run", 30)
    assert "chunk_sentences" in note
    _shot(a, "space-confirm.png")
    a.find_element(By.ID, "keep").click()
    time.sleep(3)
    assert "finished" in _text(a, "job-status")  # nothing re-ran
    run = demo.space_app.run_dir(demo.space_app.pool.owners()[0])
    assert not (run / "archive").exists()

    _advanced(a, "mine.candidates=30")
    _click_tab(a, "3 Generate")
    a.find_element(By.ID, "run-generate").click()
    _wait_text(a, "job-status", "generate", 30)
    seen = set()
    deadline = time.time() + 600
    while time.time() < deadline and "finished" not in _text(a, "job-status"):
        text = _text(a, "progress")
        if "queries" in text:
            seen.add(text.split("·")[0].strip())
            if len(seen) == 2:
                _shot(a, "space-progress.png")
        time.sleep(0.5)
    assert "finished" in _text(a, "job-status"), _text(a, "log")
    assert len(seen) >= 2, seen  # the bar's count moved while it ran
    table = _wait_text(a, "sample-queries", "factual", 30)
    assert "factual" in table
    assert "No job yet" in _text(b, "job-status")
    _click_tab(a, "7 Publish & Export")  # the regression guard's verdict, before any publish
    assert "run evaluate first" in _wait_text(a, "verdict", "Never below base", 30)
    _shot(a, "space.png")
    _shot(b, "space-other-visitor.png")
