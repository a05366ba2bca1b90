"""What the app shows of validation during training (issue 25), without a server: the curve's plot rows and text for a
live run, for a relation's recorded curve and for a run's end, and a training job that carries its curve so far to
every page that follows it (a reloaded page sees it at once)."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import torch
from PIL import Image

from reversion_core.events import StepEvent, ValidationEvent
from reversion_core.relation_file import RelationPrompt, save_relation
from reversion_core.report_card import ScoredImage
from server.card_view import shelf_card_view
from server.gpu_runner import TrainingReady
from server.shelves import SharedShelf
from server.training_jobs import TrainingJob, TrainingSlot, run_training
from server.validation_view import curve_rows, ended_view, event_view, record_view

PAIRS = [("red circle", "blue square"), ("green triangle", "yellow diamond")]
RECORD = {
    "kind": "world", "every": 2, "steps": 10, "pairs": [list(p) for p in PAIRS], "split": "the exemplar set's validation.json",
    "curve": [{"step": 2, "relation": 0.5, "entities": 0.5, "leakage": 0.0, "seconds": 1.0},
              {"step": 4, "relation": 1.0, "entities": 0.5, "leakage": 0.5, "seconds": 1.0}],
    "best_step": 4, "keep": "best", "kept_step": 4,
    "why": "The <R> of the last step, 4, was kept: it drew the relation on the most validation pairs (1.00).",
    "stop_when_flat": 0, "stopped_early": None, "note": "",
}


def validation_event(step: int, curve: list[dict], kind: str = "world") -> ValidationEvent:
    images = [ScoredImage(Image.new("RGB", (32, 32), "white"), f"{a} <R> {b}", k, True, False) for k, (a, b) in enumerate(PAIRS)]
    point = curve[-1]
    figures = {key: point[key] for key in ("relation", "entities", "leakage")}
    return ValidationEvent(step, figures, PAIRS, images, curve, step, kind, 1.0)


def test_the_plot_has_one_line_a_figure_relation_and_entities_right_on_the_world():
    view = record_view(RECORD)
    assert curve_rows(view) == [
        {"step": 2, "score": 0.5, "figure": "relation right"}, {"step": 4, "score": 1.0, "figure": "relation right"},
        {"step": 2, "score": 0.5, "figure": "both entities right"}, {"step": 4, "score": 0.5, "figure": "both entities right"},
    ]


def test_off_the_world_the_plot_names_clips_figures_and_leaves_out_a_relation_score_it_does_not_have():
    curve = [{"step": 2, "relation": None, "entities": 0.31, "leakage": None, "seconds": 1.0}]
    view = event_view(validation_event(2, curve, kind="clip"))
    assert curve_rows(view) == [{"step": 2, "score": 0.31, "figure": "CLIP entity score"}]
    assert view.text == ("**Validation at step 2** on 2 entity pairs (CLIP): relation probe agrees -, CLIP entity score 0.31; "
                         "best so far: step 2.")


def test_a_live_point_says_its_figures_and_the_best_step_and_shows_its_images_framed():
    view = event_view(validation_event(4, RECORD["curve"]))
    assert view.text == ("**Validation at step 4** on 2 entity pairs (the world's scorer): relation right 1.00, both entities "
                         "right 0.50, nuisance leaked 0.50; best so far: step 4.")
    assert view.grid is not None and view.grid.getpixel((0, 0)) == (240, 160, 20)  # orange: relation right, an entity wrong
    assert view.caption().endswith("red, relation wrong; grey, not read.")  # what the frames mean


def test_a_relations_recorded_curve_says_how_it_was_measured_which_step_was_kept_and_why():
    view = record_view(RECORD)
    assert view.text == ("Validation during training on 2 entity pairs (the world's scorer, every 2 steps). "
                         f"{RECORD['why']}")
    assert record_view(None) is None  # trained without validation: nothing to show


def test_a_run_that_kept_its_best_step_ends_saying_so_and_one_that_kept_its_last_says_nothing_more():
    live = event_view(validation_event(4, RECORD["curve"]))
    assert ended_view(live, RECORD).text == f"{live.text} {RECORD['why']}"
    assert ended_view(live, {**RECORD, "keep": "last", "why": "The last step's <R> was kept (keep 'last')."}) == live


def test_the_report_card_panel_gets_the_curve_a_relation_recorded(tmp_path):
    card = {"base_model": "m", "steps": 4, "validation": RECORD}
    save_relation(RelationPrompt("curved", "<R>", torch.zeros(8), card), tmp_path / "relations")
    save_relation(RelationPrompt("plain", "<R>", torch.zeros(8), {"base_model": "m", "steps": 4}), tmp_path / "relations")
    shelf = SharedShelf(tmp_path / "relations", tmp_path / "runs")
    assert shelf_card_view(shelf, "curved").validation == RECORD
    assert shelf_card_view(shelf, "plain").validation is None


class PausingRunner:
    """Yields a run's first events, one validation among them, then waits until the test lets it go on."""

    note = "Validation reads CLIP's entity score only: without a relation probe (--relation-probe) it has no relation score."

    def __init__(self) -> None:
        self.validated, self.go_on = threading.Event(), threading.Event()

    def train(self, request):
        step = lambda n: StepEvent(n, 3, 0.5, 0.4, 1.0, 1e-3, float(n), 1.0)  # noqa: E731
        yield TrainingReady(1.0, 3, 0, self.note)
        yield step(1)
        yield step(2)
        yield validation_event(2, RECORD["curve"][:1])
        self.validated.set()
        assert self.go_on.wait(10)
        yield step(3)


def test_a_page_that_follows_a_training_late_gets_its_curve_so_far_and_its_validation_note():
    runner, request = PausingRunner(), SimpleNamespace(relations_dir=".", runs_dir=None)
    job = TrainingSlot().submit(TrainingJob("alice", "r"), lambda job: run_training(job, runner, request))
    assert runner.validated.wait(10)
    reloaded = next(job.updates())  # a page that starts following now, as a reloaded one does
    assert [p["step"] for p in reloaded.validation.curve] == [2] and reloaded.validation.grid is not None
    assert reloaded.validation.note == PausingRunner.note
    runner.go_on.set()
    last = list(job.updates())[-1]
    assert "step 3 of 3" in last.status and [p["step"] for p in last.validation.curve] == [2]  # later steps keep it


def test_a_continued_runs_job_starts_with_the_curve_its_relation_recorded():
    job = TrainingJob("alice", "r", validation=record_view(RECORD))
    assert [p["step"] for p in job.latest().validation.curve] == [2, 4]
