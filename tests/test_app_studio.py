"""The app's server side without a server: benchmark browsing, uploads, the training slot, the studio."""
from __future__ import annotations

import json
import threading

import pytest
from PIL import Image

from reversion_core.benchmarks import list_benchmark_sets, split_template
from reversion_core.errors import ReVersionError
from reversion_core.exemplars import exemplars_from_files
from server.benchmark_view import benchmark_view, upscale
from server.forms import bounded
from server.training_jobs import TrainingJob, TrainingSlot, TrainUpdate
from server.training_view import loss_frames, loss_rows


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


def test_more_than_100_uploaded_images_are_refused(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(ReVersionError, match="^101 images were given; a relation is learned from a few, at most 100.$"):
        exemplars_from_files([tmp_path / "a.png"] * 101, "cat <R> box")


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
    assert main.series.tolist() == ["denoise", "total", "denoise (smoothed)", "total (smoothed)"]
    assert steer.loss.tolist() == [10.0, 10.0]


def test_the_loss_plot_draws_total_over_denoise_with_a_smoothed_line():
    main, _ = loss_frames(loss_rows(1, 0.5, 0.4, 10.0) + loss_rows(2, 1.5, 1.4, 20.0))
    # series are drawn in order: raw lines, then smoothed ones, total last so denoise never covers it
    assert list(dict.fromkeys(main.series)) == ["denoise", "total", "denoise (smoothed)", "total (smoothed)"]
    smoothed = main[main.series == "total (smoothed)"].loss.tolist()
    assert smoothed == pytest.approx([0.5, (0.9 * 0.5 + 1.5) / 1.9])  # debiased moving average, weight 0.1 a step


def test_a_long_run_plots_at_most_500_points_a_line_ending_at_its_last_step():
    main, _ = loss_frames([row for step in range(1, 2002) for row in loss_rows(step, 1.0, 1.0, 1.0)])
    total = main[main.series == "total"].step.tolist()
    assert len(total) <= 501 and total[-1] == 2001


class FakeRun:
    name = "r"

    def __init__(self):
        self.stopped = threading.Event()

    def stop(self):
        self.stopped.set()


def run_until_stopped(run):
    def work(job):
        job.on_stop.append(run.stop)
        job.running = True
        job.publish(TrainUpdate("running"))
        assert run.stopped.wait(10)
        job.publish(TrainUpdate("stopped"), done=True)
    return work


def test_only_the_session_that_started_a_run_can_stop_it():
    slot, run = TrainingSlot(), FakeRun()
    job = slot.submit(TrainingJob("alice", "r"), run_until_stopped(run))
    updates = job.updates()
    assert next(u for u in updates if u.status == "running")
    # in public mode the other run is another visitor's: its name is not for everyone
    assert slot.busy() and slot.waiting_message() == "Waiting: another training is running; yours starts as soon as it ends."
    assert "another session" in slot.stop("bob") and not run.stopped.is_set()
    assert slot.stop("alice").startswith("Stopping after this step") and run.stopped.is_set()
    assert [u.status for u in updates][-1] == "stopped"


def test_a_run_goes_on_when_its_follower_goes_away():
    slot, run = TrainingSlot(), FakeRun()
    job = slot.submit(TrainingJob("alice", "r"), run_until_stopped(run))
    follower = job.updates()
    next(follower)
    follower.close()  # the page closed
    assert slot.job_of("alice") is job and not job.done
    slot.stop("alice")
    assert [u.status for u in job.updates()][-1] == "stopped"  # a page that comes back follows it to its end


def test_a_queued_run_stopped_before_it_starts_never_starts():
    slot, first = TrainingSlot(), FakeRun()
    slot.submit(TrainingJob("alice", "r"), run_until_stopped(first))
    queued = slot.submit(TrainingJob("bob", "b"), lambda job: pytest.fail("bob's cancelled run was built"))
    # bob waits behind alice and presses Stop
    assert slot.stop("bob") == "The running training belongs to another session; your queued training was cancelled."
    first.stop()
    assert [u.status for u in queued.updates()][-1] == "Your queued training was cancelled before it started."
    again = FakeRun()
    job = slot.submit(TrainingJob("bob", "b"), run_until_stopped(again))
    again.stop()
    assert [u.status for u in job.updates()][-1] == "stopped"


def test_stop_between_a_start_and_its_run_cancels_the_run():
    slot = TrainingSlot()
    with slot.starting("alice"):  # the Start's run is on its way to the queue
        assert slot.stop("alice") == "Your training was cancelled before it started."
        job = slot.submit(TrainingJob("alice", "r"), lambda job: pytest.fail("the cancelled run was built"))
    assert [u.status for u in job.updates()][-1] == "Your queued training was cancelled before it started."
    assert slot.stop("alice") == "No training of yours is running."


def test_stop_with_no_run_on_its_way_cancels_nothing_later():
    slot, run = TrainingSlot(), FakeRun()
    assert slot.stop("alice") == "No training of yours is running."  # after only checking a Start (/prepare_training)
    with slot.starting("alice"):
        job = slot.submit(TrainingJob("alice", "r"), run_until_stopped(run))
    assert next(u for u in job.updates() if u.status == "running")
    run.stop()


def test_out_of_range_settings_are_refused_in_one_sentence():
    with pytest.raises(ReVersionError, match=r"^Learning rate must be a number from 1e-07 to 0.1, not 1000000000.0.$"):
        bounded("learning_rate", 1e9)
    with pytest.raises(ReVersionError, match=r"^Seed must be a whole number from 0 to 9223372036854775807, not 1180591620717411303424.$"):
        bounded("seed", 2**70, integer=True)
    with pytest.raises(ReVersionError, match="^Temperature must be a number from 0.001 to 10, not nan.$"):
        bounded("temperature", float("nan"))
    assert bounded("seed", 2**63 - 1, integer=True) == 2**63 - 1


def test_templates_split_into_the_two_entities():
    assert split_template("red circle <R> blue square") == ("red circle", "blue square")


def test_a_run_whose_vector_turns_non_finite_is_shown_as_failed(tiny_model_dir, exemplar_dir, tmp_path, monkeypatch):
    from reversion_core.exemplars import load_exemplars
    from reversion_core.inversion import Inversion
    from reversion_core.settings import InversionSettings
    from server.studio import Studio

    monkeypatch.setattr(Inversion, "_usable", lambda self, vector: False)  # what a far too large step does to <R>
    studio = Studio(tiny_model_dir, tmp_path / "relations", tmp_path, tmp_path / "tmp", device="cpu")
    settings = InversionSettings(max_train_steps=3, train_batch_size=1, gradient_accumulation_steps=1)
    last = list(studio.train(None, studio.new_training(load_exemplars(exemplar_dir), "blown_up", settings)))[-1]
    assert last.status.startswith("Failed at step 1. Training stopped at step 1 because the <R> vector became NaN")
    assert last.warning == last.status


def test_every_world_set_is_browsable_and_one_without_a_learned_relation_offers_none(tmp_path):
    from pathlib import Path

    from server.studio import Studio
    from reversion_core.world import RELATION_NAMES

    benchmark = Path(__file__).resolve().parents[1] / "assets" / "benchmark"
    assert set(RELATION_NAMES) <= set(list_benchmark_sets(benchmark))
    studio = Studio(relations_dir=tmp_path / "relations", benchmark_dir=benchmark, temp_dir=tmp_path / "tmp")
    for name in RELATION_NAMES:
        assert len(benchmark_view(benchmark, name).templates) == 100
        assert studio.relation_for_set(name) is None  # nothing learned yet: the app says so instead of failing


def test_relations_for_another_base_model_are_listed_apart_with_the_reason(tiny_model_dir, tmp_path):
    import torch

    from reversion_core.relation_file import RelationPrompt, save_relation
    from server.studio import Studio
    from ui.wiring import unusable_text

    relations = tmp_path / "relations"
    studio = Studio(tiny_model_dir, relations, temp_dir=tmp_path / "tmp", device="cpu")
    here = studio.base_model_id()
    save_relation(RelationPrompt("mine", "<R>", torch.zeros(32), {"base_model": here}), relations)
    save_relation(RelationPrompt("sd15", "<R>", torch.zeros(768), {"base_model": "stable-diffusion-v1-5#0123456789"}), relations)
    assert studio.relation_names() == ["mine"]
    assert unusable_text(studio, studio.shared) == (
        "Relations for another base model (not usable here):\n- **sd15**: Relation 'sd15' was learned on the SD 1.5 "
        f"(stable-diffusion-v1-5#0123456789) and this app runs the model ({here}); a relation prompt only works with "
        "the base model it was learned on."
    )


def test_a_training_longer_than_the_gpu_cap_is_refused_before_it_is_queued(tiny_model_dir, exemplar_dir, tmp_path):
    from reversion_core.exemplars import load_exemplars
    from reversion_core.settings import InversionSettings
    from server.studio import Studio

    studio = Studio(tiny_model_dir, tmp_path / "relations", temp_dir=tmp_path / "tmp", device="cpu", cap_s=120)
    settings = InversionSettings(max_train_steps=2000, train_batch_size=1, gradient_accumulation_steps=1)
    # the runner's starting estimate: (15 s + 2000 x 0.15 s + 20 validations x 8 pairs x 10 steps x 0.1 s) x 1.25 = 594 s;
    # 326 steps and their 4 validations (steps 100, 200, 300, 326) take 15 + 48.9 + 32 = 95.9 s <= 120 s / 1.25
    with pytest.raises(ReVersionError, match=r"^2000 training steps need about 594 GPU seconds, more than this app's limit "
                                             r"of 120; at most 326 steps fit, so ask for 326 steps or fewer\.$"):
        studio.start_training("alice", studio.new_training(load_exemplars(exemplar_dir), "too_long", settings))
    assert not studio.slot.busy()


def test_a_train_click_builds_its_settings_once_and_the_loop_gets_that_very_object(tiny_model_dir, tmp_path, monkeypatch):
    from reversion_core.inversion import Inversion
    from reversion_core.settings import InversionSettings
    from server.forms import TrainForm
    from server.studio import Studio

    studio = Studio(tiny_model_dir, tmp_path / "relations", temp_dir=tmp_path / "tmp", device="cpu")
    validated, loop_got = [], []
    check = InversionSettings.validate
    monkeypatch.setattr(InversionSettings, "validate", lambda self: validated.append(self) or check(self))
    build = Inversion.from_components.__func__
    monkeypatch.setattr(Inversion, "from_components", classmethod(
        lambda cls, exemplars, pipeline, name, settings, **options: loop_got.append(settings) or build(cls, exemplars, pipeline, name, settings, **options)))
    # the API's names (steps, batch_size, grad_accum, preview_prompt) are the settings' inside the code
    form = TrainForm.from_values(set_name="above", name="once", max_train_steps=2, train_batch_size=1,
                                 gradient_accumulation_steps=1, preview_every=0, validation_prompt="square <R> circle")
    request = studio.training_request(form)
    updates = list(studio.train(None, request))
    assert updates[-1].status.startswith("Finished at step 2")
    assert loop_got == [request.settings] and loop_got[0] is request.settings and validated == [request.settings]
    assert (request.settings.max_train_steps, request.settings.validation_prompt) == (2, "square <R> circle")
