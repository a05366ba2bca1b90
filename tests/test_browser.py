"""The app in a real browser: headless Chromium (Debian's package) driven by Playwright clicks through all three tabs,
trains a relation while the loss plot and previews update, generates with it, and saves a screenshot of each tab.

Screenshots go to the test's output folder, or to ``$REVERSION_SCREENSHOT_DIR`` when set. The docs' screenshots are
this test on the embedded model with the shipped relations, generating with one of them:

    REVERSION_SCREENSHOT_DIR=docs/screenshots REVERSION_BROWSER_BASE_MODEL=assets/base-model \
    REVERSION_BROWSER_GENERATE_WITH=above python -m pytest tests/test_browser.py
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from test_app import ROOT, SHIPPED, free_port, launch_app, make_shipped_relation, wait_until_served

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test drives Chromium through Playwright: pip install -r requirements-dev.txt")
CHROMIUM = os.environ.get("REVERSION_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BASE_MODEL = os.environ.get("REVERSION_BROWSER_BASE_MODEL")  # default: the tests' tiny model
GENERATE_WITH = os.environ.get("REVERSION_BROWSER_GENERATE_WITH")  # default: the relation the test trains
TRAIN_STEPS = 200  # several of the page's once-a-second updates even on a fast machine (40 could end before the first)

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
            # The shipped relations as the user's own (no shipped.txt), as in the tiny-model run: the tests overwrite 'above'.
            shutil.copytree(ROOT / "relations", relations_dir, ignore=shutil.ignore_patterns("shipped.txt"))
    else:
        model_dir = tiny_model_dir
        make_shipped_relation(tiny_model_dir, relations_dir)
        shutil.copytree(relations_dir / SHIPPED, relations_dir / "above")  # a relation named like the first set
    port = free_port()
    process = launch_app(model_dir, relations_dir, temp_dir, port)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_served(url, process)
        yield url, relations_dir
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def open_page(url: str):
    """Headless Chromium on the app at ``url``, once the page's load events have answered."""
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_selector("#set-gallery img")
        yield page
        browser.close()


@pytest.fixture
def page(served_app):
    with open_page(served_app[0]) as page:
        yield page


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
    seen, deadline = [], time.monotonic() + 180
    while "Finished" not in page.locator("#train-status").inner_text() and time.monotonic() < deadline:
        seen.append(plot_points(page))  # the plot as the run goes
        page.wait_for_timeout(200)
    expect(page.locator("#train-status")).to_contain_text("Finished")
    page.wait_for_timeout(500)
    final = plot_points(page)
    assert any(0 < n < final for n in seen), f"the loss plot did not gain points during training: {sorted(set(seen))} then {final}"
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
    page.wait_for_function("[...document.querySelectorAll('#gen-gallery img')].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(shots / "generate.png"), full_page=True)

    # Benchmark: the exemplar gallery and captions of a set.
    page.get_by_role("tab", name="Benchmark").click()
    expect(page.locator("#bench-gallery img").first).to_be_visible()
    expect(page.get_by_text("Captions at every level")).to_be_visible()
    page.screenshot(path=str(shots / "benchmark.png"), full_page=True)
    assert {"benchmark.png", "generate.png", "train.png"} <= {p.name for p in shots.glob("*.png")}  # docs/screenshots holds more

    # The Benchmark tab's buttons carry the set to the other tabs.
    page.locator("#to-generate").click()
    # the entities arrive in the same response as the relation: once they show, the dropdown is no longer the old choice
    expect(page.locator("#entity-a textarea, #entity-a input").first).to_have_value("green triangle", timeout=30_000)
    # the relation named after the set wins over one only learned from it (Studio.relation_for_set)
    named_after_set = re.compile("^(above|browser_above)$") if BASE_MODEL else "above"  # another base model: no shipped one
    expect(page.locator("#relation-dropdown input")).to_have_value(named_after_set)
    page.get_by_role("tab", name="Benchmark").click()
    page.locator("#to-train").click()
    expect(page.locator("#relation-name textarea, #relation-name input").first).to_have_value(re.compile(r"^above_\d+$"))
    expect(page.locator("#train-start")).to_be_visible()


# ----------------------------------------------------------------------------------------------- helpers
def name_box(page):
    return page.locator("#relation-name textarea, #relation-name input").first


def start_training(page, name: str, steps: int, overwrite: bool = False) -> None:
    box = page.locator("#train-steps input[type=number]")
    box.fill(str(steps))
    box.press("Enter")
    name_box(page).fill(name)
    if overwrite:
        page.locator("#overwrite input").check()
    page.locator("#train-start").click()


def status(page) -> str:
    return page.locator("#train-status").inner_text()


def wait_for_status(page, text: str, timeout: float = 120_000) -> None:
    page.wait_for_function("t => document.querySelector('#train-status').innerText.includes(t)", arg=text, timeout=timeout)


def wait_for_match(page, pattern: str, timeout: float = 120_000) -> str:
    """The first group of the first status that matches ``pattern``, read and matched in one go: the status moves on
    between steps and previews ("preview at step N"), so a status waited for and then read again may be another."""
    js = "p => { const m = document.querySelector('#train-status').innerText.match(new RegExp(p)); return m ? m[1] : null; }"
    return page.wait_for_function(js, arg=pattern, timeout=timeout).json_value()


def wait_for_plot(page) -> None:
    page.wait_for_function("() => document.querySelectorAll('#loss-plot svg path[aria-roledescription=\"line mark\"]').length > 0",
                           timeout=120_000)


def press_stop(page) -> None:
    # a plain DOM click: on a busy 2-core machine Playwright's wait for a still page can outlast the test
    page.locator("#train-stop").dispatch_event("click")


def toasts(page) -> list[str]:
    return [t.inner_text() for t in page.locator("[data-testid=toast-text]").all()]


def card(relations_dir: Path, name: str) -> dict:
    import json

    return json.loads((relations_dir / name / "card.json").read_text())


# ----------------------------------------------------------------------------------------------- hardening
def test_the_train_tab_and_train_on_these_propose_a_free_name(page, served_app):
    from reversion_core.relation_file import free_relation_name

    expect = playwright_api.expect
    free = free_relation_name(served_app[1], "above")  # "above_2" unless another test of the module saved one
    assert free != "above"  # "above" exists: the first click must not fail
    expect(name_box(page)).to_have_value(free)
    page.get_by_role("tab", name="Benchmark").click()
    page.locator("#to-train").click()
    expect(name_box(page)).to_have_value(free)
    page.locator("#train-steps input[type=number]").fill("2")
    page.locator("#train-steps input[type=number]").press("Enter")
    page.locator("#train-start").click()
    wait_for_status(page, "Finished")
    assert f"relation {free} is saved" in status(page)
    page.get_by_role("tab", name="Benchmark").click()
    page.locator("#to-train").click()
    expect(name_box(page)).to_have_value(free_relation_name(served_app[1], "above"))


def test_a_reloaded_page_follows_its_running_training_and_can_stop_it(page, served_app):
    start_training(page, "survives_reload", 2000)
    try:
        wait_for_plot(page)
        wait_for_status(page, "step")
        page.reload()  # closing or reloading the tab leaves the run going on the server
        wait_for_plot(page)
        step = int(wait_for_match(page, r"Training survives_reload: step (\d+) of 2000"))
        assert step > 0
        # the page shows the run's own settings, not the defaults
        playwright_api.expect(page.locator("#train-steps input[type=number]")).to_have_value("2000")
        playwright_api.expect(name_box(page)).to_have_value("survives_reload")
    finally:
        press_stop(page)  # a failed check must not leave the run taking the CPU from the next tests
    wait_for_status(page, "Stopped")
    assert "Stopping after this step; the latest <R> will be saved." in toasts(page)  # the toast keeps <R>
    saved = card(served_app[1], "survives_reload")
    assert saved["status"] == "stopped" and saved["steps"] >= step


def test_stopping_an_overwrite_run_at_once_keeps_the_existing_relation(page, served_app):
    before = card(served_app[1], "above")
    start_training(page, "above", 2000, overwrite=True)
    try:
        wait_for_status(page, "Training above: step")  # the run has begun (at step 0 or a few steps in)
    finally:
        press_stop(page)
    wait_for_status(page, "Stopped")
    match = re.search(r"The existing relation 'above' was kept; this stopped run was saved as '(\w+)'", status(page))
    assert match, status(page)
    assert card(served_app[1], "above") == before
    assert card(served_app[1], match.group(1))["status"] == "stopped"


def test_a_relation_continues_from_the_train_tab_with_its_plot(page, served_app):
    start_training(page, "to_continue", 4)
    wait_for_status(page, "Finished at step 4")
    page.wait_for_timeout(500)
    points = plot_points(page)
    page.locator("#continue-box").get_by_text("Continue a relation trained here").click()
    page.locator("#continue-name input").click()
    page.get_by_role("option", name="to_continue", exact=True).click()
    box = page.locator("#more-steps input[type=number]")
    box.fill("4")
    box.press("Enter")
    page.locator("#continue-start").click()
    wait_for_status(page, "Finished at step 8")
    page.wait_for_timeout(500)
    assert plot_points(page) > points  # the plot goes on from step 4 instead of starting over
    assert card(served_app[1], "to_continue")["steps"] == 8


def test_galleries_show_whole_pixelated_images_with_captions_under_them(page, served_app):
    page.wait_for_selector("#set-gallery img")
    page.get_by_role("tab", name="Benchmark").click()
    page.wait_for_selector("#bench-gallery img")
    page.wait_for_timeout(500)
    for gallery, min_side in (("#bench-gallery", 150), ("#set-gallery", 100)):
        if gallery == "#set-gallery":
            page.get_by_role("tab", name="Train").click()
            page.wait_for_timeout(500)
        boxes = page.evaluate("""g => {
            const frame = document.querySelector(g).getBoundingClientRect();
            return Array.from(document.querySelectorAll(g + ' .thumbnail-item')).map(item => {
                const img = item.querySelector('img'), cap = item.querySelector('.caption-label');
                const i = img.getBoundingClientRect(), c = cap.getBoundingClientRect(), s = getComputedStyle(img);
                return {fit: s.objectFit, rendering: s.imageRendering, width: i.width, height: i.height, imgBottom: i.bottom,
                        capTop: c.top, capClipped: cap.scrollWidth > cap.clientWidth + 1, right: i.right, frameRight: frame.right};
            });
        }""", gallery)
        assert len(boxes) == 6, gallery
        for box in boxes:
            assert box["fit"] == "contain" and box["rendering"] == "pixelated", (gallery, box)
            assert box["width"] >= min_side and box["height"] >= min_side, (gallery, box)  # readable size
            assert box["capTop"] >= box["imgBottom"] - 1, (gallery, box)  # the caption does not cover the image
            assert not box["capClipped"] and box["right"] <= box["frameRight"] + 1, (gallery, box)  # nothing cut off
    page.get_by_role("tab", name="Generate").click()
    page.wait_for_selector("#relation-preview img")
    preview = page.evaluate("""() => { const i = document.querySelector('#relation-preview img');
        const r = i.getBoundingClientRect(); return [r.height, getComputedStyle(i).imageRendering]; }""")
    assert preview[0] >= 200 and preview[1] == "pixelated"


def test_a_typed_step_count_out_of_range_is_refused_not_clamped(page, served_app):
    box = page.locator("#train-steps input[type=number]")
    box.fill("-5")
    name_box(page).fill("minus_five")
    page.locator("#train-start").click()
    page.wait_for_selector("[data-testid=toast-text]")
    assert toasts(page) == ["Steps must be a whole number from 1 to 3000, not -5."]  # as the API refuses it
    page.wait_for_timeout(1000)
    assert status(page) == "Idle." and not (served_app[1] / "minus_five").exists()  # no run, and no red mark


def test_a_refused_action_leaves_no_error_mark_on_its_outputs(page, served_app, tmp_path):
    start_training(page, "above", 2)  # the name is taken and 'Overwrite' is not ticked
    page.wait_for_selector("[data-testid=toast-text]")
    assert any("'above'" in toast for toast in toasts(page))
    page.wait_for_timeout(1000)
    assert status(page) == "Idle."  # not a red "Error" above it
    page.get_by_role("tab", name="Generate").click()
    page.locator("#import-box").get_by_text("Import or download a relation").click()
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a relation at all")
    page.locator("#import-files input[type=file]").set_input_files(str(junk))
    page.wait_for_timeout(1000)
    page.locator("#import-button").click()
    page.wait_for_function("() => Array.from(document.querySelectorAll('[data-testid=toast-text]'))"
                           ".some(t => t.innerText.startsWith('junk.bin'))")
    page.wait_for_timeout(1000)
    dropdown = page.locator("#relation-dropdown")
    assert "Error" not in dropdown.inner_text()  # the relation list, an output of the refused import, is as it was
    dropdown.locator("input").click(timeout=5_000)  # and takes clicks again
    page.wait_for_selector("[role=option]")


def test_after_a_run_the_name_field_proposes_a_free_name(page, served_app):
    start_training(page, "named_once", 2)
    wait_for_status(page, "Finished")
    assert "relation named_once is saved" in status(page)
    playwright_api.expect(name_box(page)).to_have_value("named_once_2")  # Start again without an "already exists"


def test_an_error_toast_shows_the_placeholder_as_text(page, served_app):
    page.get_by_role("tab", name="Generate").click()
    page.get_by_label("Free prompt").check()
    page.locator("#generate-button").click()
    page.wait_for_selector("[data-testid=toast-text]")
    assert "Write a prompt containing <R>, such as 'rabbit <R> carrot'." in toasts(page)


# ----------------------------------------------------------------------------------------------- public mode
@pytest.fixture(scope="module")
def public_served_app(tiny_model_dir, tmp_path_factory):
    """(url, shipped relations dir, data dir) of the app in public mode on the tiny model."""
    base = tmp_path_factory.mktemp("public_browser_app")
    relations_dir, temp_dir, data = base / "relations", base / "tmp", base / "data"
    temp_dir.mkdir()
    make_shipped_relation(tiny_model_dir, relations_dir)
    port = free_port()
    process = launch_app(tiny_model_dir, relations_dir, temp_dir, port, "--public", env={"REVERSION_DATA_DIR": str(data)})
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_served(url, process)
        yield url, relations_dir, data
    finally:
        process.terminate()
        process.wait(10)


def relation_options(page) -> list[str]:
    """The Generate tab's relation choices, as the dropdown lists them."""
    page.get_by_role("tab", name="Generate").click()
    page.locator("#relation-dropdown input").click()
    page.wait_for_selector("[role=option]")
    options = [o.inner_text().strip().split("\n")[-1] for o in page.locator("[role=option]").all()]  # no "✓" mark
    page.keyboard.press("Escape")
    return options


def test_public_mode_keeps_two_browsers_relations_apart(public_served_app):
    url, shipped, data = public_served_app
    expect = playwright_api.expect
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            alice, bob = (browser.new_context(viewport={"width": 1400, "height": 1000}).new_page() for _ in range(2))
            for page in (alice, bob):
                page.set_default_timeout(60_000)
                page.goto(url)
                page.wait_for_selector("#set-gallery img")
            expect(alice.locator("#header")).to_contain_text("Public mode: what you train or import is yours alone")

            start_training(alice, "shared_name", 2)
            wait_for_status(alice, "Finished")
            assert relation_options(alice) == ["shared_name", SHIPPED]
            assert relation_options(bob) == [SHIPPED]  # the other browser does not see it

            bob.get_by_role("tab", name="Train").click()
            start_training(bob, "shared_name", 2)  # the same name is free in bob's own workspace
            wait_for_status(bob, "Finished")
            assert "relation shared_name is saved" in status(bob)
            bob.get_by_role("tab", name="Train").click()
            start_training(bob, SHIPPED, 2, overwrite=True)
            bob.wait_for_selector("[data-testid=toast-text]")
            assert (f"'{SHIPPED}' is one of the shipped relations, which nobody can overwrite; choose another name."
                    in toasts(bob))

            alice.reload()  # the page's token is kept in the browser: the same workspace again
            alice.wait_for_selector("#set-gallery img")
            assert relation_options(alice) == ["shared_name", SHIPPED]
        finally:
            browser.close()
    workspaces = sorted(data.glob("workspaces/v-*/relations/shared_name"))
    assert len(workspaces) == 2 and not (shipped / "shared_name").exists()
    assert card(shipped, SHIPPED)["steps"] == 100  # the shipped relation as it was made
