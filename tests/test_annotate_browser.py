"""In a real browser: a tiny files-oracle run through the CLI, every query labelled on the annotation page in
headless Chromium (keys and clicks, undo, unsure, grid), then 'Continue training' (annotate --then-train)
runs the same `main` command and the labeled set grows.

Needs Debian's chromium + chromium-driver (`.ci/run` installs them) and selenium (the `test` extra). Skipped
with the reason when they are absent, unless BOOSTMIS_REQUIRE_BROWSER=1 (set by `.ci/run` after installing
them), where a missing browser fails. BOOSTMIS_SCREENSHOT=1 also copies the screenshot to docs/annotate.png.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import TINY, TINY_AL, env, main_cmd, run_cmd  # the tiny CLI run of test_al_loop

from boostmis_jax.oracle import LabelSpace, read_answers, read_manifest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,860"]


def _browser_or_skip():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        reason = (f"no browser for the annotation page test: {', '.join(missing)} missing; install Debian's "
                  "chromium and chromium-driver (as .ci/run does)")
        if os.environ.get("BOOSTMIS_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def driver(tmp_path):
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    profile = tmp_path / "chrome-profile"
    profile.mkdir()
    opts.add_argument(f"--user-data-dir={profile}")
    d = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER, log_output=str(tmp_path / "driver.log")))
    yield d
    d.quit()


def _start_annotate(wd):
    # the env of a CLI test run (1 CPU device, unbuffered): --then-train passes it on to the main command
    p = subprocess.Popen([sys.executable, "-m", "boostmis_jax.annotate", "--workdir", str(wd), "--port", "0",
                          "--then-train"], cwd=ROOT, env=env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    for line in p.stdout:
        if line.startswith("open "):
            return p, line.split()[1]
    p.wait()
    raise AssertionError(f"annotate printed no address: {p.stderr.read()[-2000:]}")


def test_label_every_query_in_the_browser_then_training_continues(driver, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wd = tmp_path / "run"
    # budget 4 x 2 selectors (aus+bus) = the 8 queries labelled below
    p = run_cmd(main_cmd(wd, *TINY, *TINY_AL, "--config.al.budget=4", "--config.al.selectors=aus+bus",
                         "--config.al.cycles=1", "--config.al.oracle=files"))
    assert p.returncode == 0, p.stderr[-3000:]
    manifest = read_manifest(0, wd)
    n = len(manifest.queries)
    assert n == 8 and manifest.has_images
    labels = LabelSpace(len(manifest.class_names), manifest.class_names)

    server, url = _start_annotate(wd)
    try:
        wait = WebDriverWait(driver, 60)
        text = lambda el_id: driver.find_element(By.ID, el_id).text
        counted = lambda k: wait.until(lambda d: text("count") == f"{k} of {n} labelled")
        at = lambda k: wait.until(lambda d: text("position") == f"{k} of {n}")
        keys = lambda s: ActionChains(driver).send_keys(s).perform()

        driver.get(url)
        counted(0)
        at(1)
        assert driver.find_element(By.ID, "img").get_attribute("naturalWidth") == "8"  # the 8x8 scan itself
        assert "(" in text("pred") and "%" in text("pred")                          # model confidence
        keys("1")                                     # key: class 0, moves to the next open query
        counted(1)
        at(2)
        driver.find_element(By.ID, "cls-3").click()   # click: class 3
        counted(2)
        keys("u")                                     # undo the click: row 2 empty again, shown again
        counted(1)
        at(2)
        keys("4")                                     # class 3 by key instead
        counted(2)
        at(3)
        keys("s")                                     # unsure: stays empty, moves on
        at(4)
        counted(2)
        keys("\ue012")                                # ArrowLeft: back to the skipped one
        at(3)
        driver.find_element(By.ID, "cls-9").click()   # the tenth class by click ("0" is its key)
        counted(3)
        at(4)
        driver.save_screenshot(str(tmp_path / "annotate.png"))
        for k in ("8", "0"):                          # 4 -> class 7, 5 -> class 9
            keys(k)
        counted(5)
        at(6)
        keys("g")                                     # grid view: states of every query
        wait.until(lambda d: d.find_element(By.ID, "grid").is_displayed())
        tiles = driver.find_elements(By.CSS_SELECTOR, "#grid .tile")
        assert [t.get_attribute("data-state") for t in tiles] == ["labelled"] * 5 + ["unlabelled"] * 3
        assert tiles[2].find_element(By.CSS_SELECTOR, ".lab").text == manifest.class_names[9]
        driver.save_screenshot(str(tmp_path / "annotate_grid.png"))
        tiles[7].click()                              # open the last query from the grid
        at(8)
        driver.find_element(By.ID, "cls-2").click()   # 8 -> class 2, moves to the first open one (6)
        counted(6)
        at(6)
        keys("6")
        keys("2")                                     # 6 -> class 5, 7 -> class 1
        counted(n)

        wait.until(lambda d: d.find_element(By.ID, "done").is_displayed())
        command = text("command")
        assert "boostmis_jax.main" in command and "--config.al.oracle=files" in command
        expected = [0, 3, 9, 7, 9, 5, 1, 2]
        picked = {q.index: k for q, k in zip(manifest.queries, expected)}
        assert read_answers(wd / "queries" / "cycle_0.csv", manifest.queries, labels) == picked
        driver.find_element(By.ID, "continue").click()
        wait.until(lambda d: d.find_element(By.ID, "trained").is_displayed())
        out, err = server.communicate(timeout=900)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    if os.environ.get("BOOSTMIS_SCREENSHOT") == "1":
        shutil.copyfile(tmp_path / "annotate.png", ROOT / "docs" / "annotate.png")
    assert server.returncode == 0, err[-3000:]
    assert "continuing training" in out
    s = json.loads((wd / "summary.json").read_text())
    assert [c["labeled"] for c in s["cycles"]] == [30, 38]
    assert s["n_active"] == n
    print(f"screenshots: {tmp_path / 'annotate.png'}, {tmp_path / 'annotate_grid.png'}")



def test_zero_label_first_round_labelled_in_the_browser_then_the_classifier_trains(driver, tmp_path):
    """From an unlabeled folder: the self-supervised stage picks cycle 0 with no classifier (no prediction
    shown), a person labels it on the page, and 'Continue training' trains the first classifier."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from test_zero_label import build_unlabeled_folder, folder_cmd

    folder, wd = tmp_path / "scans", tmp_path / "run"
    truth = build_unlabeled_folder(folder)
    p = run_cmd(folder_cmd(wd, folder))
    assert p.returncode == 0, p.stderr[-3000:]
    manifest = read_manifest(0, wd)
    n = len(manifest.queries)
    assert n == 8 and manifest.has_images and not (wd / "model").exists()

    server, url = _start_annotate(wd)
    try:
        wait = WebDriverWait(driver, 60)
        text = lambda el_id: driver.find_element(By.ID, el_id).text
        driver.get(url)
        wait.until(lambda d: text("count") == f"0 of {n} labelled")
        assert text("pred") == ""                      # no classifier yet: no prediction, no confidence
        assert not driver.find_elements(By.CSS_SELECTOR, "button.cls.predicted")
        for k, q in enumerate(manifest.queries):
            wait.until(lambda d, k=k: text("position") == f"{k + 1} of {n}")
            ActionChains(driver).send_keys(str(truth[q.id] + 1)).perform()   # key 1 = normal, 2 = pneumonia
            wait.until(lambda d, k=k: text("count") == f"{k + 1} of {n} labelled")
        wait.until(lambda d: d.find_element(By.ID, "done").is_displayed())
        labels = LabelSpace(2, manifest.class_names)
        assert read_answers(wd / "queries" / "cycle_0.csv", manifest.queries, labels) == \
            {q.index: truth[q.id] for q in manifest.queries}
        driver.find_element(By.ID, "continue").click()
        wait.until(lambda d: d.find_element(By.ID, "trained").is_displayed())
        out, err = server.communicate(timeout=900)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, err[-3000:]
    assert "continuing training" in out
    assert (wd / "model").is_dir()                     # the first classifier, trained on the 8 labels
    rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert {r["labeled"] for r in rows if "train/loss" in r} == {8}
    assert read_manifest(1, wd).queries                # and the next round waits for the person
