"""The dashboard in a real headless Chromium: `streamlit run dashboards/app.py` on a free localhost
port against a synthetic results tree; the page must render, on screen (a screenshot is taken and
kept as the test's artefact), the results table with its seeds column, the sections in reading order,
the benchmark and along-training charts and the collapse badge.
Needs Debian's chromium + chromium-driver (.ci/run installs them); skipped with the reason otherwise."""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_dashboard import full_tree

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
APP = Path(__file__).resolve().parent.parent / "dashboards" / "app.py"
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium / chromedriver not installed "
                                "(apt-get install chromium chromium-driver; .ci/run does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    params, res, runs = full_tree(tmp_path)
    port = free_port()
    env = {**os.environ, "SENSEFLOW_RESULTS": str(res), "SENSEFLOW_RUNS": str(runs), "SENSEFLOW_PARAMS": str(params),
           "SENSEFLOW_DVC_REPO": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
                             "--server.headless", "true", "--server.address", "localhost"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("localhost", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"streamlit did not start: {proc.stdout.read().decode()[-2000:]}")
    yield f"http://localhost:{port}"
    proc.terminate()
    proc.wait(timeout=20)


def test_page_renders_table_and_chart(server, tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,6000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(server)
        wait = WebDriverWait(driver, 90)
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '[data-testid="stDataFrame"]')))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')) >= 5)
        time.sleep(2)  # let the charts draw before the screenshot
        shot = tmp_path / "dashboard.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
        assert "SenseFlow workbench" in driver.find_element(By.TAG_NAME, "h1").text
        headings = [h.text for h in driver.find_elements(By.TAG_NAME, "h2")]
        wanted = ["Variant × metric", "Ablation (paper Tab. 2 shape)", "GenEval and T2I-CompBench",
                  "Metrics along training", "Training curves"]
        assert [h for h in headings if h in wanted] == wanted  # in reading order, none repeated
        table = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stDataFrame"]')[0]
        assert table.is_displayed() and table.size["height"] > 80
        charts = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stVegaLiteChart"]')
        assert all(c.size["height"] > 50 for c in charts[:5])
        alerts = " ".join(a.text for a in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stAlert"]'))
        assert "collapse/oscillation alarm" in alerts and "seed 0" in alerts
        assert "Traceback" not in driver.page_source
    finally:
        driver.quit()
