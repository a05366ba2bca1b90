"""The quality curve in the app (issue 25), through gradio_client against the embedded model (the world's scorer reads
its validation images exactly): the /train stream carries the curve as it arrives, keep 'best' keeps the best step,
an early stop says at which step and why, and a continued relation's stream starts with its curve so far."""
from __future__ import annotations

import json

import pytest

from test_app import RESULT_TIMEOUT, ROOT, running_app
from ui.wiring import as_markdown

gradio_client = pytest.importorskip("gradio_client", reason="pip install -r requirements-dev.txt")
from gradio_client import Client  # noqa: E402

EMBEDDED = ROOT / "assets" / "base-model"
# few steps of one sample each, validated every 2 steps on 4 of the set's validation pairs
QUICK = {"set_name": "above", "steps": 4, "batch_size": 1, "grad_accum": 1, "preview_every": 0, "validate_every": 2,
         "validation_pairs": 4}
PLOT, TEXT, GRID = 7, 8, 9  # the quality curve's outputs, after the seven the Train tab had before

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(url, relations_dir) of a running app on the embedded model, with no relations yet."""
    base = tmp_path_factory.mktemp("validating_app")
    relations_dir, temp_dir = base / "relations", base / "tmp"
    temp_dir.mkdir()
    with running_app(EMBEDDED, relations_dir, temp_dir) as url:
        yield url, relations_dir


@pytest.fixture
def client(app):
    return Client(app[0], verbose=False)


def curve(update) -> dict[str, list[tuple[int, float]]]:
    """The quality curve an update carries: figure -> [(step, score)] ({} when the plot is empty)."""
    plot = update[PLOT]
    out: dict[str, list[tuple[int, float]]] = {}
    for step, score, figure in (plot or {}).get("data") or []:
        out.setdefault(figure, []).append((step, score))
    return out


def steps(update) -> list[int]:
    return [step for step, _ in curve(update).get("relation right", [])]


def card(app, name: str) -> dict:
    return json.loads((app[1] / name / "card.json").read_text())


def train(client, name: str, **values):
    job = client.submit(name=name, **{**QUICK, **values}, api_name="/train")
    job.result(timeout=RESULT_TIMEOUT)
    return job.outputs()


def test_the_train_stream_carries_the_quality_curve_as_it_arrives(client, app):
    updates = train(client, "curve_live")
    assert [2] in [steps(u) for u in updates[:-1]]  # the first point comes while the run goes on
    last = updates[-1]
    assert last[0].startswith("Finished at step 4")
    assert set(curve(last)) == {"relation right", "both entities right"}
    assert steps(last) == [2, 4] and [s for s, _ in curve(last)["both entities right"]] == [2, 4]
    recorded = card(app, "curve_live")["validation"]["curve"]
    assert curve(last)["relation right"] == [(p["step"], p["relation"]) for p in recorded]
    assert last[TEXT].startswith("**Validation at step 4** on 4 entity pairs (the world's scorer): relation right")
    assert last[GRID] is not None  # the latest validation images, framed right or wrong


def test_keep_best_keeps_the_step_with_the_highest_relation_score_and_says_so(client, app):
    last = train(client, "curve_best", keep="best")[-1]
    scores = curve(last)["relation right"]
    best = max(scores, key=lambda point: (point[1], -point[0]))[0]  # ties go to the earlier step
    validation = card(app, "curve_best")["validation"]
    assert (validation["keep"], validation["kept_step"]) == ("best", best)
    assert as_markdown(validation["why"]) in last[TEXT]  # "The `<R>` of step 2 was kept (keep 'best'): ..."


def test_a_flat_curve_stops_the_run_early_and_the_status_says_at_which_step_and_why(client, app):
    last = train(client, "curve_flat", steps=40, validate_every=1, validation_pairs=2, stop_when_flat=1)[-1]
    stopped = card(app, "curve_flat")["steps"]
    assert stopped < 40  # 2 pairs can gain at most twice, so the run stops within a few validations
    assert last[0].startswith(f"Finished at step {stopped}")
    assert f"Stopped early at step {stopped}: the relation score on the validation pairs has not risen" in last[0]


def test_a_continued_relation_streams_its_curve_so_far_then_goes_on(client, app):
    train(client, "curve_continued")
    job = client.submit("curve_continued", 2, api_name="/continue_training")
    job.result(timeout=RESULT_TIMEOUT)
    updates = job.outputs()
    assert steps(updates[0]) == [2, 4]  # before the continuation's first step: the curve of the first part
    assert steps(updates[-1]) == [2, 4, 6]
    assert [p["step"] for p in card(app, "curve_continued")["validation"]["curve"]] == [2, 4, 6]
