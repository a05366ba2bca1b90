"""The app in a real browser: headless Chromium (Debian's package) driven by Playwright clicks through all three tabs,
trains a relation while the loss plot and previews update, generates with it, and saves a screenshot of each tab.

Screenshots go to the test's output folder, or to ``$REVERSION_SCREENSHOT_DIR`` when set. The docs' screenshots are
this test on the embedded model with the shipped relations, generating with one of them:

    REVERSION_SCREENSHOT_DIR=docs/screenshots REVERSION_BROWSER_BASE_MODEL=assets/base-model \
    REVERSION_BROWSER_GENERATE_WITH=above python -m pytest tests/test_browser.py
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from test_app import ROOT, free_port, launch_app, make_shipped_relation, wait_until_served

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("REVERSION_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BASE_MODEL = os.environ.get("REVERSION_BROWSER_BASE_MODEL")  # default: the tests' tiny model
GENERATE_WITH = os.environ.get("REVERSION_BROWSER_GENERATE_WITH")  # default: the relation the test trains
TRAIN_STEPS = 40  # enough for several plot updates on the tiny model, a few seconds on 2 cores

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM) and not Path(CHROMIUM).is_file(),
                                reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def served_app(tiny_model_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("browser_app")
    relations_dir, temp_dir = base / "relations", base / "tmp"
    temp_dir.mkdir()
    if BASE_MODEL:
        model_dir = Path(BASE_MODEL).resolve()
        if (ROOT / "relations").is_dir():
            shutil.copytree(ROOT / "relations", relations_dir)
    else:
        model_dir = tiny_model_dir
        make_shipped_relation(tiny_model_dir, relations_dir)
    port = free_port()
    process = launch_app(model_dir, relations_dir, temp_dir, port)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_served(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def page(served_app):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(served_app)
        yield page
        browser.close()


def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("REVERSION_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def plot_points(page) -> int:
    """Vertices of the loss plot's visible lines (vega draws each line as one SVG path, one segment per point)."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('#loss-plot svg path[aria-roledescription="line mark"]'))
                 .filter(el => getComputedStyle(el).stroke !== 'none')
                 .reduce((n, el) => n + (el.getAttribute('d') || '').split(/[ML]/).length - 1, 0)"""
    )


def test_clicks_through_train_generate_and_benchmark(page, tmp_path):
    shots = screenshot_dir(tmp_path)
    expect = playwright_api.expect
    expect(page.get_by_role("heading", name="ReVersion Studio")).to_be_visible()

    # Train: a short run on a benchmark set; the plot gains points, a preview appears, the relation is saved.
    expect(page.locator("#train-status")).to_contain_text("Idle")
    steps = page.locator("#train-steps input[type=number]")
    steps.fill(str(TRAIN_STEPS))
    steps.press("Enter")
    page.locator("#relation-name textarea, #relation-name input").first.fill("browser_above")
    page.locator("#train-start").click()
    expect(page.locator("#train-status")).to_contain_text("step", timeout=120_000)
    page.wait_for_function("() => document.querySelectorAll('#loss-plot svg path[aria-roledescription=\"line mark\"]').length > 0")
    first = plot_points(page)
    expect(page.locator("#train-status")).to_contain_text("Finished", timeout=180_000)
    page.wait_for_timeout(500)
    assert plot_points(page) > first > 0, "the loss plot did not gain points during training"
    expect(page.locator("#train-previews img").first).to_be_visible()
    page.screenshot(path=str(shots / "train.png"), full_page=True)

    # Generate: the new relation is chosen; two entities; images appear in the gallery.
    page.get_by_role("tab", name="Generate").click()
    expect(page.locator("#relation-dropdown input")).to_have_value("browser_above")
    if GENERATE_WITH:
        page.locator("#relation-dropdown input").click()
        page.get_by_role("option", name=GENERATE_WITH, exact=True).click()
        expect(page.locator("#relation-dropdown input")).to_have_value(GENERATE_WITH)
    page.locator("#entity-a textarea, #entity-a input").first.fill("red circle")
    page.locator("#entity-b textarea, #entity-b input").first.fill("blue square")
    page.locator("#generate-button").click()
    expect(page.locator("#gen-gallery img").first).to_be_visible(timeout=120_000)
    page.screenshot(path=str(shots / "generate.png"), full_page=True)

    # Benchmark: the exemplar gallery and captions of a set.
    page.get_by_role("tab", name="Benchmark").click()
    expect(page.locator("#bench-gallery img").first).to_be_visible()
    expect(page.get_by_text("Captions at every level")).to_be_visible()
    page.screenshot(path=str(shots / "benchmark.png"), full_page=True)
    assert sorted(p.name for p in shots.glob("*.png")) == ["benchmark.png", "generate.png", "train.png"]

    # The Benchmark tab's buttons carry the set to the other tabs.
    page.locator("#to-generate").click()
    learned_from_above = re.compile("^(above|browser_above)$") if BASE_MODEL else "browser_above"  # shipped or trained
    expect(page.locator("#relation-dropdown input")).to_have_value(learned_from_above)
    expect(page.locator("#entity-a textarea, #entity-a input").first).to_have_value("green triangle")
    page.get_by_role("tab", name="Benchmark").click()
    page.locator("#to-train").click()
    expect(page.locator("#relation-name textarea, #relation-name input").first).to_have_value("above")
    expect(page.locator("#train-start")).to_be_visible()
