"""The quality curve in a real browser (issue 25), on the embedded model, whose world scorer reads validation images
exactly: it plots live beside the loss with the latest validation images under it, a reloaded page shows the curve so
far of the training it follows, and the Generate tab's report-card panel shows the curve the relation recorded.

The test saves ``train-validation.png`` (the Train tab with the curve) to the test's output folder, or to
``$REVERSION_SCREENSHOT_DIR`` when set (docs/screenshots for the README).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from test_app import ROOT, running_app
from test_browser import CHROMIUM, card, open_page, press_stop, screenshot_dir, start_training, wait_for_status

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -r requirements-dev.txt")
VALIDATE_EVERY = 10  # about 3 s of training between points on the embedded model (batch 2 x accumulation 4)

pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(not shutil.which(CHROMIUM) and not Path(CHROMIUM).is_file(),
                                 reason="Debian's chromium is not installed (.ci/run installs it)")]


@pytest.fixture(scope="module")
def validating_app(tmp_path_factory):
    """(url, relations_dir) of the app on the embedded model, with the shipped relations."""
    base = tmp_path_factory.mktemp("browser_validation")
    relations_dir, temp_dir = base / "relations", base / "tmp"
    temp_dir.mkdir()
    shutil.copytree(ROOT / "relations", relations_dir)
    with running_app(ROOT / "assets" / "base-model", relations_dir, temp_dir) as url:
        yield url, relations_dir


def curve_points(page, plot: str = "#validation-plot") -> int:
    """Vertices of a quality plot's lines (one SVG path a figure, one segment per validated step)."""
    return page.evaluate(
        """p => Array.from(document.querySelectorAll(p + ' svg path[aria-roledescription="line mark"]'))
                 .reduce((n, el) => n + (el.getAttribute('d') || '').split(/[ML]/).length - 1, 0)""", plot)


def wait_for_curve_points(page, at_least: int, plot: str = "#validation-plot") -> None:
    js = """([p, n]) => Array.from(document.querySelectorAll(p + ' svg path[aria-roledescription="line mark"]'))
                 .reduce((k, el) => k + (el.getAttribute('d') || '').split(/[ML]/).length - 1, 0) >= n"""
    page.wait_for_function(js, arg=[plot, at_least], timeout=120_000)


def set_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_the_quality_curve_plots_live_follows_a_reload_and_shows_on_the_generate_tab(validating_app, tmp_path):
    expect = playwright_api.expect
    with open_page(validating_app[0]) as page:
        page.get_by_text("Advanced", exact=True).click()
        set_number(page, "validate-every", VALIDATE_EVERY)
        page.locator("#train-keep").get_by_text("the best validation step").click()
        start_training(page, "curve_in_browser", 2000)
        try:
            wait_for_curve_points(page, 4)  # two figures (relation, entities) at two validated steps
            expect(page.locator("#validation-text")).to_contain_text("Validation at step")
            expect(page.locator("#validation-grid img")).to_be_visible()
            page.reload()  # the page follows the run again, and shows the curve so far at once
            wait_for_curve_points(page, 4)
            expect(page.locator("#validation-grid img")).to_be_visible()
            wait_for_curve_points(page, 6)  # and goes on as points arrive
        finally:
            press_stop(page)  # a failed check must not leave the run taking the CPU from the next tests
        wait_for_status(page, "Stopped")
        page.wait_for_timeout(500)
        page.screenshot(path=str(screenshot_dir(tmp_path) / "train-validation.png"), full_page=True)
        recorded = card(validating_app[1], "curve_in_browser")["validation"]
        assert len(recorded["curve"]) >= 3 and recorded["kept_step"] == recorded["best_step"]

        page.get_by_role("tab", name="Generate").click()
        page.locator("#relation-dropdown input").click()
        page.get_by_role("option", name="curve_in_browser", exact=True).click()
        wait_for_curve_points(page, 2 * len(recorded["curve"]), "#gen-score-curve-plot")
        expect(page.locator("#gen-score-curve-text")).to_contain_text(recorded["why"])  # <R> shown as text, not a tag
