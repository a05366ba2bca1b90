"""The report-card panel: its plain logic on a stand-in world painter, then the panel in a minimal Blocks and in
app.py, driven through gradio_client and in headless Chromium, on a miniature model of the world's size (so the
world's scorer reads its images).

The README's report-card screenshot is the Generate-tab browser test on the embedded model with the shipped
relations, scoring one of them on the default pairs:

    REVERSION_SCREENSHOT_DIR=docs/screenshots REVERSION_BROWSER_BASE_MODEL=assets/base-model \
    REVERSION_BROWSER_GENERATE_WITH=above REVERSION_BROWSER_SCORE_PAIRS=16 \
    python -m pytest tests/test_score_panel.py -k generate_tab
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from reversion_core.relation_file import RelationPrompt, load_relation, save_relation
from reversion_core.report_card import GRID_FILE, MARK_COLOURS
from reversion_core.errors import ReVersionError
from reversion_core.report_card import score_relation
from server.card_view import NO_CARD, UNREADABLE_CARD, CardView, is_read_only, save_and_view, saved_card_view
from reversion_core.world import COLOURS, RELATION_NAMES, SHAPES
from test_report_card import WorldPainter as PlainPainter
from test_report_card import world_relation

CHANCE = f"{1 / len(RELATION_NAMES):.2f}"
ROOT = Path(__file__).resolve().parent.parent
BASE_MODEL = os.environ.get("REVERSION_BROWSER_BASE_MODEL")  # default: the world-sized tiny model
SCORED = os.environ.get("REVERSION_BROWSER_GENERATE_WITH", "mine")  # the relation the Generate-tab test scores
SCORE_PAIRS = int(os.environ.get("REVERSION_BROWSER_SCORE_PAIRS", "8"))  # 8 columns: the grid fills its column


class WorldPainter(PlainPainter):
    """The stand-in world painter with a pipeline that looks like the world's (32 px, world words), so the app's
    automatic scorer choice picks the world's scorer."""

    pipeline = SimpleNamespace(
        unet=SimpleNamespace(config=SimpleNamespace(sample_size=4)), vae_scale_factor=8,
        tokenizer=SimpleNamespace(get_vocab=lambda: {f"{w}</w>": i for i, w in enumerate((*SHAPES, *COLOURS))}),
    )


# ----------------------------------------------------------------------------------------------- the logic
def scored(tmp_path, pairs=4, progress=None):
    relation = world_relation(tmp_path)
    return relation, score_relation(relation, WorldPainter(tmp_path / "relations"), pairs=pairs, progress=progress)


def test_a_scored_card_is_saved_with_its_grid_and_shown(tmp_path):
    relation, card = scored(tmp_path, pairs=4)
    view = save_and_view(relation, card)
    assert view.table[0] == ["relation right", "1.00", "0.00", CHANCE]
    assert "Report card of **above** on 4 held-out entity pairs, read by the world's scorer" in view.text
    assert "Saved into `above/card.json`." in view.text
    folder = tmp_path / "relations" / "above"
    saved = json.loads((folder / "card.json").read_text())["report_card"]
    assert saved["grid"] == GRID_FILE and saved["metrics"]["relation_accuracy"] == 1.0
    with Image.open(folder / GRID_FILE) as grid:
        assert grid.size == view.grid.size == (4 * 104, 104)  # 4 cells of 96 px in 4 px frames
        assert grid.convert("RGB").getpixel((1, 1)) == MARK_COLOURS["right"]


def test_a_read_only_relation_is_shown_but_not_saved(tmp_path):
    relation, card = scored(tmp_path, pairs=2)
    card_file = tmp_path / "relations" / "above" / "card.json"
    before = card_file.read_bytes()
    view = save_and_view(relation, card, save=False)
    assert view.text.count("This is a shipped relation, which is read-only here, so the card is shown but not saved.") == 1
    assert view.table[0][1] == "1.00" and view.grid is not None
    assert card_file.read_bytes() == before and not (card_file.parent / GRID_FILE).exists()


def test_shipped_relations_are_read_only_in_public_mode_and_nothing_is_in_a_shared_folder(tmp_path):
    from server.shelves import SharedShelf, VisitorShelf
    from server.workspaces import Workspaces

    shipped = world_relation(tmp_path)  # in tmp_path/relations, the shipped folder below
    visitor = VisitorShelf(Workspaces(tmp_path / "relations", tmp_path / "data").for_visitor("page:a"))
    save_relation(RelationPrompt("own", "<R>", torch.randn(32), {}), visitor.relations_dir)
    own = load_relation(visitor.relation_path("own"), None)
    assert is_read_only(visitor, shipped) is True and is_read_only(visitor, own) is False
    assert is_read_only(SharedShelf(tmp_path / "relations", tmp_path / "runs"), shipped) is False


def test_a_card_that_cannot_be_written_is_shown_with_the_reason(tmp_path, monkeypatch):
    def refuse(*_):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("server.card_view.save_report_card", refuse)
    view = save_and_view(*scored(tmp_path, pairs=2))
    assert "The card could not be saved (Permission denied); it is shown here only." in view.text and view.table


def test_the_saved_card_is_shown_again_from_the_relation_folder(tmp_path):
    fresh = save_and_view(*scored(tmp_path, pairs=3))
    again = saved_card_view(load_relation("above", tmp_path / "relations"))
    assert again.table == fresh.table and again.grid.size == fresh.grid.size
    assert again.text.startswith("Report card of **above** on 3 held-out entity pairs") and "Frames: green" in again.text


def test_a_relation_without_a_card_says_so(tmp_path):
    view = saved_card_view(world_relation(tmp_path))
    assert (view.text, view.table, view.grid) == (NO_CARD, [], None)


def test_a_damaged_saved_card_is_called_unreadable_not_an_error(tmp_path):
    relation = world_relation(tmp_path)
    relation.card["report_card"] = {"kind": "world", "pairs": [], "metrics": {"relation_accuracy": "high"}, "seconds": "x"}
    assert saved_card_view(relation) == CardView(UNREADABLE_CARD, [], None)


def test_a_card_naming_a_missing_grid_shows_the_table_without_it(tmp_path):
    save_and_view(*scored(tmp_path, pairs=2))
    (tmp_path / "relations" / "above" / GRID_FILE).unlink()
    view = saved_card_view(load_relation("above", tmp_path / "relations"))
    assert view.grid is None and view.table[0][1] == "1.00" and "Frames" not in view.text


# ----------------------------------------------------------------------------------------------- shipped relations
def files_of(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_scoring_a_shipped_relation_keeps_its_files_and_the_card_with_the_users_data(world_model_dir, tmp_path):
    from server.card_view import shelf_card_view
    from server.studio import Studio

    relations = tmp_path / "relations"  # laid out as the repository's relations/, on a temporary copy
    save_world_relation(world_model_dir, relations, "ours")
    (relations / "shipped.txt").write_text("# what the app ships\nours\n")
    before = files_of(relations)
    studio = Studio(world_model_dir, relations, temp_dir=tmp_path / "tmp", device="cpu")
    view = studio.score_relation("ours", 2)
    assert view.text.count("This is a shipped relation, so the card is kept with your data "
                           "(`runs/ours/report-card/card.json`), not in its files.") == 1
    assert files_of(relations) == before  # git status stays clean
    again = shelf_card_view(studio.shared, "ours")  # shown whenever the relation is picked
    assert again.text.startswith("Report card of **ours** on 2 held-out entity pairs") and again.table == view.table
    assert again.grid.size == view.grid.size
    card = json.loads((relations / "ours" / "card.json").read_text())
    (relations / "ours" / "card.json").write_text(json.dumps({**card, "created_at": "2030-01-01T00:00:00+00:00"}))
    assert shelf_card_view(studio.shared, "ours").text == NO_CARD  # a card of the relation before it was updated is not its


def test_the_app_never_writes_over_a_shipped_relation(tmp_path):
    from server.shelves import SharedShelf

    save_relation(RelationPrompt("ours", "<R>", torch.zeros(32), {}), tmp_path / "relations")
    (tmp_path / "relations" / "shipped.txt").write_text("ours\n")
    shelf = SharedShelf(tmp_path / "relations", tmp_path / "runs")
    with pytest.raises(ReVersionError) as info:
        shelf.check_new("ours", overwrite=True)
    assert str(info.value) == "'ours' is one of the shipped relations, which the app never changes; choose another name."
    assert shelf.free_name("ours") == "ours_2" and "ours" not in shelf.own_names()


# ----------------------------------------------------------------------------------------------- the GPU runner
@pytest.fixture
def world_runner(world_model_dir, tmp_path):
    from reversion_core.generation import RelationGenerator
    from server.gpu_runner import GpuRunner, StepTimes
    from server.hosting import pick_runtime

    runtime = pick_runtime({}, cuda_available=False, base_model=str(world_model_dir))
    generator = RelationGenerator(runtime.base_model, device="cpu", relations_dir=tmp_path / "relations")
    return GpuRunner(generator, runtime, cap_s=None, times=StepTimes())


def test_the_runner_streams_progress_then_the_card_with_the_pipeline_locked(world_runner, world_model_dir, tmp_path):
    from server.forms import ScoreRequest
    from server.gpu_runner import ScoreProgress

    save_world_relation(world_model_dir, tmp_path / "relations", "mine")
    generate = world_runner.generator.generate_prompts
    locked = []

    def watched(*args, **kwargs):
        locked.append(world_runner._lock.locked())
        return generate(*args, **kwargs)

    world_runner.generator.generate_prompts = watched
    items = list(world_runner.score(ScoreRequest(str(tmp_path / "relations" / "mine"), pairs=2, steps=2)))
    assert [(i.done, i.total) for i in items[:-1]] == [(2, 4), (4, 4)] and all(isinstance(i, ScoreProgress) for i in items[:-1])
    card = items[-1]
    assert card.kind == "world" and len(card.images) == len(card.reference_images) == 2 and card.images[0].image.size == (32, 32)
    assert locked == [True, True] and not world_runner._lock.locked()
    assert "generation" in world_runner.times.measured


def test_a_card_longer_than_the_gpu_cap_is_refused_saying_how_many_pairs_fit(world_runner):
    from server.forms import ScoreRequest

    world_runner.cap_s, world_runner.times.generation = 60.0, 0.1  # 16 pairs x 2 x 25 steps x 0.1 s x 1.25 = 100 s
    with pytest.raises(ReVersionError) as info:
        next(world_runner.score(ScoreRequest("unused", pairs=16)))
    assert str(info.value) == ("A report card on 16 entity pairs needs about 100 GPU seconds, more than this app's limit of 60; "
                               "at most 9 pairs fit, so score on 9 pairs or fewer.")


def test_a_failure_inside_the_runner_reaches_the_caller(world_runner, tmp_path):
    from server.forms import ScoreRequest

    with pytest.raises(ReVersionError, match="does not exist"):
        list(world_runner.score(ScoreRequest(str(tmp_path / "missing"), pairs=2, steps=2)))
    assert not world_runner._lock.locked()


# ----------------------------------------------------------------------------------------------- the panel
def world_sized_model(tiny_model_dir: Path, folder: Path) -> Path:
    """The tests' tiny model drawing 32 px images (16x16 latents): the world's size, and its words are in the
    tiny vocabulary, so the report card reads its (random) images with the world's scorer."""
    shutil.copytree(tiny_model_dir, folder)
    config_path = folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["sample_size"] = 16
    config_path.write_text(json.dumps(config))
    return folder


def save_world_relation(model_dir: Path, relations_dir: Path, name: str) -> None:
    """A relation learned (here: drawn at random) on ``model_dir`` from the world's 'above' exemplars."""
    from reversion_core.base_model import base_model_id, load_pipeline

    pipe = load_pipeline(model_dir, device="cpu")
    vector = torch.randn(pipe.text_encoder.get_input_embeddings().weight.shape[1], generator=torch.Generator().manual_seed(0))
    card = {"base_model": base_model_id(pipe, model_dir), "steps": 100, "status": "finished",
            "relation": {"name": "above", "nuisance": {"target": "background", "pattern": "dotted"}}}
    save_relation(RelationPrompt(name, "<R>", vector, card), relations_dir)


@pytest.fixture(scope="module")
def world_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return world_sized_model(tiny_model_dir, tmp_path_factory.mktemp("world_sized") / "model")


@pytest.fixture(scope="module")
def panel_app(world_model_dir, tmp_path_factory):
    """A minimal Blocks with a relation dropdown and the panel (the studio's shared shelf), served in-process:
    (url, relations folder)."""
    gr = pytest.importorskip("gradio")
    from server.studio import Studio
    from ui.score_panel import build_score_panel
    from test_app import free_port

    base = tmp_path_factory.mktemp("panel")
    relations_dir = base / "relations"
    save_world_relation(world_model_dir, relations_dir, "mine")
    studio = Studio(world_model_dir, relations_dir, temp_dir=base / "tmp", device="cpu")
    with gr.Blocks() as demo:
        relation = gr.Dropdown(["mine"], value="mine", label="Relation", allow_custom_value=True)
        build_score_panel(studio, relation, api_name="score_relation")
    demo.queue(default_concurrency_limit=1)
    port = free_port()
    demo.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", relations_dir
    finally:
        demo.close()


def test_the_panel_scores_through_the_api_and_saves_the_card(panel_app):
    from gradio_client import Client

    url, relations_dir = panel_app
    text, table, grid = Client(url, verbose=False).predict("mine", 8, api_name="/score_relation")
    assert "Report card of **mine** on 8 held-out entity pairs, read by the world's scorer" in text
    assert [row[0] for row in table["data"]] == ["relation right", "both entities right", "nuisance leaked (lower is better)"]
    assert table["headers"] == ["figure", "<R>", "phrase", "chance"] and table["data"][0][3] == CHANCE
    with Image.open(grid) as image:
        assert image.size == (8 * 104, 104)
        frames = {image.convert("RGB").getpixel((x * 104 + 1, y * 104 + 1)) for x in range(8) for y in range(1)}
    assert frames <= {MARK_COLOURS["right"], MARK_COLOURS["entities wrong"], MARK_COLOURS["wrong"]}
    saved = json.loads((relations_dir / "mine" / "card.json").read_text())["report_card"]
    assert [f"{v:.2f}" for v in saved["metrics"].values()] == [row[1] for row in table["data"]]


def test_the_panel_refuses_an_unknown_relation_in_one_sentence(panel_app):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=re.escape("There is no relation named 'nothing'.")):
        Client(panel_app[0], verbose=False).predict("nothing", 2, api_name="/score_relation")


@pytest.mark.parametrize("pairs, message", [(0, "Entity pairs must be a whole number from 1 to 200, not 0."),
                                            (201, "Entity pairs must be a whole number from 1 to 200, not 201."),
                                            (2.5, "Entity pairs must be a whole number from 1 to 200, not 2.5.")])
def test_the_panel_refuses_pair_counts_out_of_range(panel_app, pairs, message):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=re.escape(message)):
        Client(panel_app[0], verbose=False).predict("mine", pairs, api_name="/score_relation")


# ----------------------------------------------------------------------------------------------- in the app
@pytest.fixture(scope="module")
def world_app(world_model_dir, tmp_path_factory):
    """app.py on the world-sized tiny model with one relation, 'mine' (or on $REVERSION_BROWSER_BASE_MODEL with the
    shipped relations): (url, relations folder)."""
    base = tmp_path_factory.mktemp("world_app")
    if BASE_MODEL:
        shutil.copytree(ROOT / "relations", base / "relations")
        yield from serve_app(Path(BASE_MODEL).resolve(), base)
    else:
        yield from serve_app(world_model_dir, base)


@pytest.fixture(scope="module")
def public_app(world_model_dir, tmp_path_factory):
    """The same app in public mode, where the relations it ships are read-only."""
    yield from serve_app(world_model_dir, tmp_path_factory.mktemp("public_app"), "--public")


def serve_app(model_dir: Path, base: Path, *flags: str):
    from test_app import free_port, launch_app, wait_until_served

    relations_dir, temp_dir = base / "relations", base / "tmp"
    temp_dir.mkdir()
    if not relations_dir.exists():
        save_world_relation(model_dir, relations_dir, "mine")
        save_world_relation(model_dir, relations_dir, "ours")  # listed as shipped, as relations/ lists its own
        (relations_dir / "shipped.txt").write_text("ours\n")
    port = free_port()
    process = launch_app(model_dir, relations_dir, temp_dir, port, *flags)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_served(url, process)
        yield url, relations_dir
    finally:
        process.terminate()
        process.wait(10)


def test_the_app_scores_a_relation_and_saves_its_card(world_app):
    from gradio_client import Client

    url, relations_dir = world_app
    client = Client(url, verbose=False)
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/score_relation"]
    assert [(p["parameter_name"], p["parameter_default"]) for p in api["parameters"]] == [("relation", "mine"), ("pairs", 16)]
    text, table, grid = client.predict(relation="mine", pairs=2, api_name="/score_relation")
    assert "Report card of **mine** on 2 held-out entity pairs, read by the world's scorer" in text
    assert "Saved into `mine/card.json`." in text and table["data"][0][0] == "relation right"
    saved = json.loads((relations_dir / "mine" / "card.json").read_text())["report_card"]
    assert len(saved["pairs"]) == 2 and f"{saved['metrics']['relation_accuracy']:.2f}" == table["data"][0][1]
    with Image.open(grid) as image:
        assert image.size == (2 * 104, 104)


def test_the_app_scores_a_shipped_relation_without_changing_its_files(world_app):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, relations_dir = world_app
    if not (relations_dir / "ours").is_dir():
        pytest.skip("the app runs the shipped relations of another base model")
    before = files_of(relations_dir / "ours")
    client = Client(url, verbose=False)
    text, table, _ = client.predict("ours", 2, api_name="/score_relation")
    assert "This is a shipped relation, so the card is kept with your data (`runs/ours/report-card/card.json`)" in text
    with pytest.raises(AppError, match="'ours' is one of the shipped relations, which the app never changes; choose another name."):
        client.predict(set_name="above", name="ours", overwrite=True, api_name="/prepare_training")
    assert files_of(relations_dir / "ours") == before and len(table["data"]) == 3


def test_the_public_app_scores_a_shipped_relation_without_saving(public_app):
    from gradio_client import Client

    url, relations_dir = public_app
    text, table, _ = Client(url, verbose=False).predict("mine", 2, api_name="/score_relation")
    assert "This is a shipped relation, which is read-only here, so the card is shown but not saved." in text
    assert len(table["data"]) == 3 and "report_card" not in json.loads((relations_dir / "mine" / "card.json").read_text())
    assert not (relations_dir / "mine" / GRID_FILE).exists()


# ----------------------------------------------------------------------------------------------- in a browser
CHROMIUM = os.environ.get("REVERSION_CHROMIUM", "/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture
def page(world_app):
    pytest.importorskip("playwright.sync_api", reason="the browser tests drive Chromium through Playwright")
    from test_browser import open_page

    with open_page(world_app[0]) as page:
        yield page


def grid_width(page, prefix: str) -> int:
    return page.locator(f"#{prefix}-grid img").evaluate("img => img.naturalWidth")


def toolbar_overlaps(page, prefix: str) -> list[str]:
    """The grid's toolbar buttons drawn over its image (their labels)."""
    return page.evaluate("""p => { const grid = document.querySelector('#' + p + '-grid');
        const i = grid.querySelector('img').getBoundingClientRect();
        return Array.from(grid.querySelectorAll('.icon-button-wrapper button')).filter(b => {
            const r = b.getBoundingClientRect();
            return r.width > 0 && r.left < i.right && r.right > i.left && r.top < i.bottom && r.bottom > i.top;
        }).map(b => b.getAttribute('aria-label') || b.title); }""", prefix)


@needs_chromium
def test_browser_generate_tab_scores_and_shows_the_saved_card_after_a_reload(page, world_app):
    from playwright.sync_api import expect

    columns = min(SCORE_PAIRS, 8)
    page.get_by_role("tab", name="Generate").click()
    if SCORED != "mine":
        page.locator("#relation-dropdown input").click()
        page.get_by_role("option", name=SCORED, exact=True).click()
    expect(page.locator("#relation-dropdown input")).to_have_value(SCORED)
    page.locator("#gen-score-pairs input").fill(str(SCORE_PAIRS))
    page.locator("#gen-score-button").click()
    expect(page.locator("#gen-score-text")).to_contain_text(f"on {SCORE_PAIRS} held-out entity pairs", timeout=300_000)
    expect(page.locator("#gen-score-table")).to_contain_text("relation right")
    expect(page.locator("#gen-score-grid img")).to_be_visible()
    assert grid_width(page, "gen-score") == columns * 104
    assert toolbar_overlaps(page, "gen-score") == []  # its buttons sit above the images, not on one
    page.screenshot(path=str(screenshot_dir() / "report-card.png"), full_page=True)

    page.reload()
    page.wait_for_selector("#set-gallery img")
    page.get_by_role("tab", name="Generate").click()
    if SCORED != "mine":
        page.locator("#relation-dropdown input").click()
        page.get_by_role("option", name=SCORED, exact=True).click()
    expect(page.locator("#gen-score-text")).to_contain_text(f"Report card of {SCORED} on {SCORE_PAIRS} held-out entity pairs")
    expect(page.locator("#gen-score-table")).to_contain_text("both entities right")
    expect(page.locator("#gen-score-grid img")).to_be_visible()
    assert grid_width(page, "gen-score") == columns * 104


@needs_chromium
def test_browser_train_tab_offers_the_card_once_a_run_has_saved_its_relation(page, world_app):
    from playwright.sync_api import expect

    from test_browser import start_training, wait_for_status

    expect(page.locator("#train-score-panel")).to_be_hidden()
    start_training(page, "trained_here", 3)
    wait_for_status(page, "Finished")
    expect(page.locator("#train-score-text")).to_contain_text("No report card yet")
    page.locator("#train-score-pairs input").fill("2")
    page.locator("#train-score-button").click()
    expect(page.locator("#train-score-text")).to_contain_text("Report card of trained_here on 2 held-out", timeout=120_000)
    expect(page.locator("#train-score-grid img")).to_be_visible()
    saved = json.loads((world_app[1] / "trained_here" / "card.json").read_text())["report_card"]
    assert saved["kind"] == "world" and saved["world_relation"] == "above" and len(saved["pairs"]) == 2


def screenshot_dir() -> Path:
    folder = Path(os.environ.get("REVERSION_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="report-card-shots-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
