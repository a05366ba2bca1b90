"""The app's helpers in reversion_core.studio, without a server: benchmark browsing, uploads, the training slot."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from reversion_core.errors import ReVersionError
from reversion_core.studio import (
    TrainingSlot, benchmark_view, exemplars_from_files, list_benchmark_sets, loss_frames, loss_rows, split_template, upscale,
)


def official_layout(root, name="painted_on"):
    """A set as the official ReVersion benchmark ships it: images and text.json with ``{}``, nothing else."""
    folder = root / name
    folder.mkdir(parents=True)
    for i, colour in enumerate(["red", "blue"]):
        Image.new("RGB", (600, 400), colour).save(folder / f"{i}.jpg")
    (folder / "text.json").write_text(json.dumps({"0.jpg": ["cat {} wall", "a cat {} a brick wall"], "1.jpg": ["flower {} vase"]}))
    return folder


def test_a_benchmark_folder_in_the_official_layout_is_listed_and_browsed(tmp_path):
    official_layout(tmp_path)
    (tmp_path / "not_a_set").mkdir()
    assert list_benchmark_sets(tmp_path) == ["painted_on"]
    view = benchmark_view(tmp_path, "painted_on")
    assert [caption for _, caption in view.gallery] == ["cat <R> wall\na cat <R> a brick wall", "flower <R> vase"]
    assert view.captions == [["0.jpg", "1", "cat <R> wall"], ["0.jpg", "2", "a cat <R> a brick wall"], ["1.jpg", "1", "flower <R> vase"]]
    assert view.templates == [] and "2 exemplar images, 3 captions" in view.description
    assert max(view.gallery[0][0].size) <= 256  # large exemplars are shrunk for the gallery


def test_a_set_name_outside_the_benchmark_is_refused(tmp_path):
    official_layout(tmp_path)
    with pytest.raises(ReVersionError, match="no exemplar set named '../painted_on'"):
        benchmark_view(tmp_path, "../painted_on")


def test_caption_lines_follow_upload_order_and_split_on_bars(tmp_path):
    files = [tmp_path / "b.png", tmp_path / "a.png"]
    for f in files:
        Image.new("RGB", (8, 8)).save(f)
    exemplars = exemplars_from_files(files, "cat <R> box | a cat <R> a box\n\nrabbit {} carrot\n")
    assert exemplars.captions_by_image == {"b.png": ["cat <R> box", "a cat <R> a box"], "a.png": ["rabbit <R> carrot"]}


def test_caption_lines_may_name_their_image(tmp_path):
    files = [tmp_path / "b.png", tmp_path / "a.png"]
    for f in files:
        Image.new("RGB", (8, 8)).save(f)
    exemplars = exemplars_from_files(files, "a.png: rabbit <R> carrot\nb.png: cat <R> box")
    assert exemplars.captions_by_image == {"b.png": ["cat <R> box"], "a.png": ["rabbit <R> carrot"]}


def test_a_caption_count_that_does_not_match_the_images_is_refused(tmp_path):
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    for f in files:
        Image.new("RGB", (8, 8)).save(f)
    with pytest.raises(ReVersionError, match="There are 2 images but 1 caption lines"):
        exemplars_from_files(files, "cat <R> box")


def test_an_uploaded_text_json_missing_an_image_is_refused(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "text.json").write_text(json.dumps({"other.png": ["cat {} box"]}))
    with pytest.raises(ReVersionError, match="Image a.png has no captions"):
        exemplars_from_files([tmp_path / "a.png", tmp_path / "text.json"], "")


def test_small_images_are_shown_enlarged_with_sharp_pixels():
    image = Image.new("RGB", (32, 32), "white")
    image.putpixel((0, 0), (255, 0, 0))
    big = upscale(image)
    assert big.size == (256, 256)
    assert big.getpixel((7, 7)) == (255, 0, 0) and big.getpixel((8, 8)) == (255, 255, 255)


def test_loss_frames_are_numeric_even_before_the_first_step():
    empty_main, empty_steer = loss_frames([])
    assert str(empty_main.step.dtype) == "int64" and str(empty_main.loss.dtype) == "float64"
    main, steer = loss_frames(loss_rows(1, 0.5, 0.4, 10.0))
    assert main.series.tolist() == ["total", "denoise"] and steer.loss.tolist() == [10.0]


def test_only_the_session_that_started_a_run_can_stop_it():
    class FakeRun:
        name, stopped = "r", False

        def stop(self):
            self.stopped = True

    slot, run = TrainingSlot(), FakeRun()
    for _ in slot.run("alice", lambda: run):
        assert slot.busy() and slot.waiting_message().startswith("Waiting: another training (r)")
        assert "another session" in slot.stop("bob") and not run.stopped
        assert slot.stop("alice").startswith("Stopping") and run.stopped
    assert not slot.busy()


def test_a_queued_run_stopped_before_it_starts_never_starts():
    slot = TrainingSlot()
    for _ in slot.run("alice", lambda: type("R", (), {"name": "r", "stop": lambda self: None})()):
        slot.stop("bob")  # bob waits behind alice and presses Stop
    assert list(slot.run("bob", lambda: pytest.fail("bob's cancelled run was built"))) == []
    assert len(list(slot.run("bob", lambda: type("R", (), {"name": "r", "stop": lambda self: None})()))) == 1


def test_templates_split_into_the_two_entities():
    assert split_template("red circle <R> blue square") == ("red circle", "blue square")


def test_every_world_set_is_browsable_and_one_without_a_learned_relation_offers_none(tmp_path):
    from pathlib import Path

    from reversion_core.studio import Studio
    from reversion_core.world import RELATION_NAMES

    benchmark = Path(__file__).resolve().parents[1] / "assets" / "benchmark"
    assert set(RELATION_NAMES) <= set(list_benchmark_sets(benchmark))
    studio = Studio(relations_dir=tmp_path / "relations", benchmark_dir=benchmark, temp_dir=tmp_path / "tmp")
    for name in RELATION_NAMES:
        assert len(benchmark_view(benchmark, name).templates) == 100
        assert studio.relation_for_set(name) is None  # nothing learned yet: the app says so instead of failing
