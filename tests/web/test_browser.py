"""A real browser (Debian's headless Chromium, driven by Selenium and chromium-driver;
nothing downloaded) logs in, opens a study, drags window/level, plays a multi-frame and
runs an upload job to its download, all under the console's Content-Security-Policy.
With DEID_NODE_SCREENSHOTS=DIR it leaves the README's screenshots there (scripts/readme/).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from deid_node.config import Config, load_config
from deid_node.runtime.node import Node
from deid_node.testing.loopback import free_port
from deid_node.testing.synthetic import PhiTokens, SyntheticPatient, ct_series
from deid_node.testing.synthetic.patient import new_dataset
from deid_node.web.app import create_app
from tests.support.node import CT_SOURCE, console_user, node_table
from tests.support.scu import store
from tests.support.waiting import wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PASSWORD = "a long enough password"
CONFIG = (
    node_table(port=free_port())  # a fixed port: the dashboard checks the node is up
    + CT_SOURCE
    + """options = ["clean-descriptors", "retain-longitudinal-modified-dates"]
burned_in_annotation = "allow"
"""
)

pytestmark = pytest.mark.slow


def _missing() -> str | None:
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not tool.exists():
            return f"{tool} not found: install chromium and chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the test extra)"
    return None


def multiframe(study: str) -> Dataset:
    ds = new_dataset("1.2.840.10008.5.1.4.1.1.7.4", generate_uid())  # multi-frame true colour SC
    ds.PatientID, ds.PatientName = "BROWSER-1", "BROWSER^TEST"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
    ds.Modality, ds.SeriesDescription = "OT", "cine loop"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 64, 64, 3
    ds.PhotometricInterpretation, ds.PlanarConfiguration = "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = 8
    frames = np.zeros((8, 64, 64, 3), dtype=np.uint8)
    for i in range(8):
        frames[i, :, i * 8 : i * 8 + 8] = (255, 128, 0)  # a bar that moves
    ds.PixelData = frames.tobytes()
    return ds


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Config, Path]]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    import uvicorn

    folder = tmp_path_factory.mktemp("browser")
    (folder / "deid-node.toml").write_text(CONFIG, encoding="utf-8")
    cfg = load_config(folder / "deid-node.toml")
    patient = SyntheticPatient.make(PhiTokens(), 11)
    cts = ct_series(4, patient=patient, seed=11, rows=128, cols=128)
    for ds in cts:
        ds.WindowCenter, ds.WindowWidth = 1000, 2000
    node = Node(cfg)
    node.start()
    try:
        sent = [*cts, multiframe(str(cts[0].StudyInstanceUID))]
        assert store(node.address, sent, "CT_SCANNER") == [0] * len(sent)
        assert node.wait_idle(60)
    except BaseException:
        node.stop(timeout=60)
        raise
    console_user(cfg, "ines", PASSWORD)
    upload = folder / "upload"
    upload.mkdir()
    for i, ds in enumerate(ct_series(2, patient=SyntheticPatient.make(PhiTokens(), 12), seed=12)):
        ds.save_as(upload / f"{i}.dcm", enforce_file_format=True)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(cfg), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the console to start")
    try:
        yield f"http://127.0.0.1:{port}", cfg, upload
    finally:
        server.should_exit = True
        thread.join(30)
        node.stop(timeout=60)


@pytest.fixture(scope="module")
def browser(site: tuple[str, Config, Path]) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP reports land there
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: Any, name: str, tmp: Path) -> None:
    folder = Path(os.environ.get("DEID_NODE_SCREENSHOTS", str(tmp)))
    folder.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(folder / f"{name}.png"))


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_log_in_open_a_study_drag_window_level_play_and_run_a_job(
    site: tuple[str, Config, Path], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    base, _cfg, upload = site
    d = browser
    d.get(base + "/")
    assert d.current_url.endswith("/login")
    d.find_element(By.NAME, "username").send_keys("ines")
    d.find_element(By.NAME, "password").send_keys(PASSWORD)
    d.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_until(lambda: "Dashboard" in d.page_source, "the dashboard")
    assert ": up" in d.find_element(By.ID, "node-state").text
    shot(d, "web_dashboard", tmp_path)

    d.get(base + "/studies")
    d.find_element(By.CSS_SELECTOR, "#studies a").click()
    study_url = d.current_url
    links = d.find_elements(By.CSS_SELECTOR, "#series td:nth-child(2) a")
    assert len(links) == 2
    ct_link = next(a for a in links if "CT" in a.find_element(By.XPATH, "../..").text)
    ct_link.click()
    image = d.find_element(By.ID, "image")
    wait_until(
        lambda: d.execute_script("return arguments[0].naturalWidth", image) == 128, "the frame"
    )
    before = image.get_attribute("src")
    ActionChains(d).move_to_element(image).click_and_hold().move_by_offset(
        60, -40
    ).release().perform()
    wait_until(lambda: "window_center" in (image.get_attribute("src") or ""), "a new window")
    assert image.get_attribute("src") != before
    wait_until(
        lambda: (
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image)
            == 128
        ),
        "the windowed frame",
    )
    assert "C " in d.find_element(By.ID, "wl").text
    shot(d, "web_viewer", tmp_path)

    d.get(study_url)
    cine = next(
        a
        for a in d.find_elements(By.CSS_SELECTOR, "#series td:nth-child(2) a")
        if "OT" in a.find_element(By.XPATH, "../..").text
    )
    cine.click()
    d.find_element(By.ID, "play").click()
    slider = d.find_element(By.ID, "frame")
    wait_until(lambda: int(slider.get_attribute("value") or 0) >= 2, "the cine to advance")
    d.find_element(By.ID, "play").click()

    d.get(base + "/jobs")
    d.find_element(By.NAME, "project").send_keys("Browser study")
    files = "\n".join(str(p) for p in sorted(upload.glob("*.dcm")))
    d.find_element(By.NAME, "files").send_keys(files)
    shot(d, "web_job_form", tmp_path)
    d.find_element(By.CSS_SELECTOR, "#job-form button").click()
    link = d.find_element(By.ID, "job-download")
    wait_until(lambda: link.is_displayed(), "the job's download link", timeout=60)
    assert "2 written" in d.find_element(By.ID, "job-text").text
    assert (link.get_attribute("href") or "").endswith("/download")

    # The Content-Security-Policy held all along, blocking nothing of the console's own,
    # and an inline script (as an injection would add) does not run.
    reports = [e["message"] for e in d.get_log("browser") if "Security Policy" in e["message"]]
    assert reports == []
    injected = d.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.injected = 1';"
        "document.body.appendChild(s); return window.injected === 1;"
    )
    assert injected is False
