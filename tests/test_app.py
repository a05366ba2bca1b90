"""The Gradio app, driven through gradio_client against a server this module launches (tiny model, offline)."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

gradio_client = pytest.importorskip(
    "gradio_client", reason="the app tests call the server through gradio_client: pip install -r requirements-dev.txt")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = "shipped_above"
# steps, lr, batch, seed, steering, lambda_steer, importance, alpha, positives, temperature, grad_accum, preview_every, prompt
QUICK = [3, 2.5e-4, 1, 0, True, 0.01, True, 0.5, 4, 0.07, 1, 2, "circle <R> square"]
LONG = [2000, *QUICK[1:]]
HOST_VARIABLES = ("REVERSION_BASE_MODEL", "REVERSION_PUBLIC", "REVERSION_DATA_DIR", "SPACE_ID", "SPACES_ZERO_GPU")
RESULT_TIMEOUT = 120  # seconds; a run that should have stopped fails the test instead of hanging it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_shipped_relation(model_dir: Path, relations_dir: Path) -> None:
    """A relation folder as the project ships them, learned (here: drawn at random) on the tiny model."""
    from reversion_core.base_model import base_model_id, load_pipeline
    from reversion_core.relation_file import RelationPrompt, save_relation

    pipe = load_pipeline(model_dir, device="cpu")
    vector = torch.randn(pipe.text_encoder.get_input_embeddings().weight.shape[1], generator=torch.Generator().manual_seed(0))
    card = {"base_model": base_model_id(pipe, model_dir), "steps": 100, "status": "finished", "relation": {"name": "above"}}
    save_relation(RelationPrompt(SHIPPED, "<R>", vector, card, Image.new("RGB", (16, 16), "red")), relations_dir)


def launch_app(model_dir: Path, relations_dir: Path, temp_dir: Path, port: int, *flags: str,
               env: dict[str, str] | None = None) -> subprocess.Popen:
    """app.py in a subprocess on the tiny model; ``flags`` and ``env`` are added to the defaults."""
    inherited = {k: v for k, v in os.environ.items() if k not in HOST_VARIABLES}  # the host's choices are the test's
    env = {**inherited, "OMP_NUM_THREADS": "1", "REVERSION_TEMP_DIR": str(temp_dir), "PYTHONUNBUFFERED": "1", **(env or {})}
    log = open(temp_dir.parent / "app.log", "a")  # outside the app's folders: it must not be served
    return subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--base-model", str(model_dir), "--relations-dir", str(relations_dir),
         "--benchmark-dir", str(ROOT / "assets" / "benchmark"), "--port", str(port), *flags],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def wait_until_served(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    raise TimeoutError(f"the app did not serve {url} within {timeout} s")


@contextlib.contextmanager
def running_app(model_dir: Path, relations_dir: Path, temp_dir: Path, *flags: str):
    """The URL of app.py serving ``model_dir`` (launched as :func:`launch_app` does), stopped on leaving."""
    port = free_port()
    process = launch_app(model_dir, relations_dir, temp_dir, port, *flags)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_served(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    """(url, relations_dir, temp_dir) of a running app on the tiny model with one shipped relation."""
    base = tmp_path_factory.mktemp("app")
    relations_dir, temp_dir = base / "relations", base / "tmp"
    temp_dir.mkdir()
    make_shipped_relation(tiny_model_dir, relations_dir)
    with running_app(tiny_model_dir, relations_dir, temp_dir) as url:
        yield url, relations_dir, temp_dir


@pytest.fixture
def client(app):
    return Client(app[0], verbose=False)


def error_of(call) -> str:
    with pytest.raises(AppError) as info:
        call()
    return str(info.value)


def train_args(name: str, numbers=QUICK, source="Benchmark set", files=(), captions="", overwrite=False) -> list:
    return [source, "above", name, overwrite, *numbers, [handle_file(f) for f in files], captions]


def relation_names(client: Client) -> list[str]:
    return client.predict(api_name="/list_relations")


def generate(client: Client, relation, a="red circle", b="blue square", mode="Entities", prompt="", n=2):
    return client.predict(relation, mode, a, b, prompt, "", "", n, 4, 7.5, 0, api_name="/generate")


def has_points(update) -> bool:
    """Whether a streamed Train update carries loss rows (the plot is left as is until the first step)."""
    return isinstance(update[1], dict) and bool(update[1].get("data"))


def write_image(path: Path, colour=(200, 40, 40)) -> Path:
    Image.new("RGB", (24, 24), colour).save(path)
    return path


# ----------------------------------------------------------------------------------------------- the happy paths
def test_lists_the_shipped_relation(client):
    assert SHIPPED in relation_names(client)  # beside whatever the module's other tests trained or imported before


def test_generates_images_with_a_shipped_relation(client):
    images, prompt = generate(client, SHIPPED, n=2)
    assert len(images) == 2
    assert "red circle <R> blue square" in prompt
    with Image.open(images[0]["image"]) as image:
        assert image.size[0] >= 128  # 16 px images are shown upscaled


def test_free_prompt_mode_takes_any_text_with_the_placeholder(client):
    images, prompt = generate(client, SHIPPED, a="", b="", mode="Free prompt", prompt="a yellow triangle <R> a green square", n=1)
    assert len(images) == 1 and "yellow triangle <R> a green square" in prompt


def test_a_short_training_streams_losses_and_previews_and_appears_in_the_relation_list(client, app):
    job = client.submit(*train_args("trained_quick"), api_name="/train")
    outputs = list(job)
    status, plot, _steer, previews, nearest, dropdown, _continuable, *_quality_curve = job.outputs()[-1]
    assert status.startswith("Finished at step 3")
    assert {row[0] for row in plot["data"]} == {1, 2, 3}
    assert previews and nearest["confidences"]
    assert "trained_quick" in [c[0] for c in dropdown["choices"]]
    assert len(outputs) >= 2  # streamed, not one answer at the end
    assert (app[1] / "trained_quick" / "learned_embeds.safetensors").is_file()
    assert "trained_quick" in relation_names(client)


def test_trains_on_uploaded_images_with_captions(client, tmp_path):
    files = [write_image(tmp_path / "a.png"), write_image(tmp_path / "b.png", (30, 160, 60))]
    captions = "red circle <R> blue square | a red circle <R> a blue square\ngreen triangle <R> yellow square"
    job = client.submit(*train_args("from_upload", source="Upload", files=files, captions=captions), api_name="/train")
    assert job.result(timeout=RESULT_TIMEOUT)[0].startswith("Finished")


def test_uploaded_text_json_gives_the_captions(client, tmp_path):
    files = [write_image(tmp_path / "1.png"), tmp_path / "text.json"]
    files[1].write_text(json.dumps({"1.png": ["red circle {} blue square"]}))
    message = client.predict(*train_args("from_json", source="Upload", files=files), api_name="/prepare_training")
    assert "from_json" in message


def test_imports_an_official_learned_embeds_bin_and_generates_with_it(client, tmp_path):
    path = tmp_path / "learned_embeds.bin"
    torch.save({"<R>": torch.randn(32)}, path)
    client.predict([handle_file(path)], "imported_bin", False, api_name="/import_relation")
    assert "imported_bin" in relation_names(client)
    images, _ = generate(client, "imported_bin", n=1)
    assert len(images) == 1


def test_importing_under_an_existing_name_asks_before_overwriting(client, tmp_path):
    path = tmp_path / "again.safetensors"
    from safetensors.torch import save_file

    save_file({"<R>": torch.randn(32)}, str(path))
    client.predict([handle_file(path)], "imported_twice", False, api_name="/import_relation")
    message = error_of(lambda: client.predict([handle_file(path)], "imported_twice", False, api_name="/import_relation"))
    assert message == "A relation named 'imported_twice' already exists; tick 'Overwrite' or choose another name."
    client.predict([handle_file(path)], "imported_twice", True, api_name="/import_relation")


def test_downloads_a_relation_as_a_zip_that_imports_again(client, tmp_path):
    import zipfile

    path = Path(client.predict(SHIPPED, api_name="/download_relation")["value"])
    assert path.suffix == ".zip"
    assert sorted(zipfile.ZipFile(path).namelist()) == sorted(
        [f"{SHIPPED}/card.json", f"{SHIPPED}/learned_embeds.safetensors", f"{SHIPPED}/preview.png"])
    client.predict([handle_file(path)], "reimported", False, api_name="/import_relation")
    assert "reimported" in relation_names(client)


def test_browses_a_benchmark_set_with_every_caption_and_template(client):
    gallery, captions, description, templates = client.predict("above", api_name="/benchmark_set")
    assert len(gallery) == 6 and len(captions["data"]) == 18
    assert "floats above" in description
    assert len(templates["data"]) == 100


# ----------------------------------------------------------------------------------------------- bad input
def test_no_images_is_refused(client):
    message = error_of(lambda: client.predict(*train_args("x", source="Upload"), api_name="/prepare_training"))
    assert message.startswith("No exemplar images")


def test_images_without_captions_are_refused(client, tmp_path):
    files = [write_image(tmp_path / "a.png")]
    message = error_of(lambda: client.predict(*train_args("x", source="Upload", files=files), api_name="/prepare_training"))
    assert "no captions" in message


def test_captions_without_the_placeholder_are_refused(client, tmp_path):
    files = [write_image(tmp_path / "a.png")]
    message = error_of(lambda: client.predict(*train_args("x", source="Upload", files=files, captions="cat on box"),
                                              api_name="/prepare_training"))
    assert "has no placeholder" in message and "<R>" in message


def test_a_corrupt_image_is_refused(client, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really an image")
    message = error_of(lambda: client.predict(*train_args("x", source="Upload", files=[bad], captions="a <R> b"),
                                              api_name="/prepare_training"))
    assert message == "File broken.png is not a readable image (jpg, png or webp)."


def test_a_50_megabyte_image_is_resized_not_rejected(client, tmp_path, app):
    big = tmp_path / "big.png"
    noise = torch.randint(0, 256, (4100, 4100, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).numpy()
    Image.fromarray(noise).save(big, compress_level=0)
    assert big.stat().st_size > 50e6
    job = client.submit(*train_args("from_big", numbers=[1, *QUICK[1:]], source="Upload", files=[big], captions="a <R> b"),
                        api_name="/train")
    assert job.result(timeout=RESULT_TIMEOUT)[0].startswith("Finished")


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "/abs"])
def test_a_relation_name_with_path_parts_is_refused_and_nothing_is_written(client, app, name):
    message = error_of(lambda: client.predict(*train_args(name), api_name="/prepare_training"))
    assert "is not allowed" in message
    message = error_of(lambda: client.submit(*train_args(name), api_name="/train").result(timeout=RESULT_TIMEOUT))
    assert "is not allowed" in message
    assert not (app[1].parent / "escape").exists() and not (app[1] / "a").exists()


def test_an_existing_name_asks_before_overwriting(client):
    message = error_of(lambda: client.predict(*train_args(SHIPPED), api_name="/prepare_training"))
    assert message == f"A relation named {SHIPPED!r} already exists; tick 'Overwrite' or choose another name."
    assert "Starting" in client.predict(*train_args(SHIPPED, overwrite=True), api_name="/prepare_training")


def test_a_relation_file_of_the_wrong_size_is_refused(client, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "small.safetensors"
    save_file({"<R>": torch.randn(7)}, str(path))
    message = error_of(lambda: client.predict([handle_file(path)], "", False, api_name="/import_relation"))
    assert message == "Relation 'small' has a vector of size 7 but the base model's text encoder uses size 32."


def test_a_relation_file_of_the_wrong_format_is_refused(client, tmp_path):
    path = tmp_path / "junk.bin"
    path.write_bytes(b"this is not a torch file at all")
    message = error_of(lambda: client.predict([handle_file(path)], "junk", False, api_name="/import_relation"))
    assert message.startswith("junk.bin ") and message.endswith("{token: tensor} dictionary.")


def test_empty_entity_boxes_are_refused(client):
    message = error_of(lambda: generate(client, SHIPPED, a="", b=" "))
    assert message == "Give both entities (A and B) or a prompt containing <R>."


def test_a_stopped_training_keeps_the_latest_relation(client, app):
    job = client.submit(*train_args("stopped_run", numbers=LONG), api_name="/train")
    for update in job:
        if has_points(update):
            break
    assert "Stopping" in client.predict(api_name="/stop")
    status = job.result(timeout=RESULT_TIMEOUT)[0]
    assert status.startswith("Stopped at step")
    card = json.loads((app[1] / "stopped_run" / "card.json").read_text())
    assert card["status"] == "stopped" and 0 < card["steps"] < 2000


def test_two_sessions_training_at_once_queue_and_the_second_is_told_it_waits(app):
    first, second = Client(app[0], verbose=False), Client(app[0], verbose=False)
    job = first.submit(*train_args("first_of_two", numbers=LONG), api_name="/train")
    for update in job:
        if has_points(update):
            break
    assert second.predict(*train_args("second_of_two"), api_name="/prepare_training") == (
        "Waiting: another training is running; yours starts as soon as it ends.")
    waiting = second.submit(*train_args("second_of_two"), api_name="/train")
    deadline = time.monotonic() + RESULT_TIMEOUT
    while not (waiting.outputs() and waiting.outputs()[-1][0].startswith("Waiting")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not waiting.done()
    # a second session cannot stop the first's run; its Stop cancels its own queued one
    assert second.predict(api_name="/stop") == ("The running training belongs to another session; your queued "
                                                "training was cancelled.")
    first.predict(api_name="/stop")
    assert job.result(timeout=RESULT_TIMEOUT)[0].startswith("Stopped")
    assert "cancelled" in waiting.result(timeout=RESULT_TIMEOUT)[0]
    second.predict(*train_args("second_of_two"), api_name="/prepare_training")
    assert second.submit(*train_args("second_of_two"), api_name="/train").result(timeout=RESULT_TIMEOUT)[0].startswith("Finished")


def test_stop_after_only_checking_a_start_says_no_training_is_running(client):
    assert client.predict(*train_args("only_checked"), api_name="/prepare_training").startswith("Starting")
    assert client.predict(api_name="/stop") == "No training of yours is running."
    job = client.submit(*train_args("only_checked"), api_name="/train")  # that Stop cancels nothing started later
    assert job.result(timeout=RESULT_TIMEOUT)[0].startswith("Finished at step 3")


def test_a_10000_character_name_is_shortened_in_the_message(client):
    message = error_of(lambda: client.predict(*train_args("n" * 10_000), api_name="/prepare_training"))
    assert message == f"A relation name has at most 100 characters; '{'n' * 39}...' (10,000 characters) is too long."


def test_a_long_entity_is_refused_and_a_prompt_cut_by_the_text_encoder_says_so(client):
    message = error_of(lambda: generate(client, SHIPPED, a="red circle " * 500, n=1))
    assert message == "Entity A has 5,500 characters; the text encoder reads only about 75 words, so write at most 300."
    images, prompt = generate(client, SHIPPED, a=" ".join(["red circle"] * 27), b=" ".join(["blue square"] * 12), n=1)
    assert len(images) == 1 and prompt.endswith(  # 54 + 1 + 24 tokens: entity B is cut after its tenth pair
        "The prompt is 79 tokens long and the text encoder reads only the first 75, so everything after "
        "'...blue square blue square' is left out; shorten it.")


def test_a_refusal_logs_one_line_and_no_traceback(client, app):
    log = app[2].parent / "app.log"
    seen = log.stat().st_size
    for values in ({"steps": -5}, {"learning_rate": "abc"}, {"source": "Somewhere"}, {"name": "a/b"}):
        error_of(lambda: client.predict(**{"name": "logged", **values}, api_name="/prepare_training"))
    time.sleep(0.5)
    with open(log, encoding="utf-8") as f:
        f.seek(seen)
        written = [line for line in f.read().splitlines() if not line.startswith("HTTP Request")]
    assert "Traceback (most recent call last):" not in written
    assert [line.split(":")[0] for line in written if line.startswith("refused")] == [
        "refused Steps", "refused Learning rate", "refused Exemplars from", "refused prepare_training"]


def test_files_outside_the_app_folders_are_not_served(app):
    for path in ("/etc/passwd", str(ROOT / "app.py"), str(app[1].parent / "app.log"), f"{app[1]}/../app.log"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{app[0]}gradio_api/file={path}", timeout=5)
        assert info.value.code in (403, 404)


def test_the_app_keeps_serving_after_bad_input(client):
    assert SHIPPED in relation_names(client)


# ----------------------------------------------------------------------------------------------- hardening
def test_error_texts_reach_api_clients_as_plain_text(client, tmp_path):
    files = [write_image(tmp_path / "a.png")]
    message = error_of(lambda: client.predict(*train_args("x", source="Upload", files=files, captions="cat on box"),
                                              api_name="/prepare_training"))
    assert message == "Caption 'cat on box' of image a.png has no placeholder; write {} or <R> where the relation goes."


def test_the_api_lists_relation_choices_names_its_outputs_and_types_integers(client):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(api) == {"/prepare_training", "/train", "/continue_training", "/stop", "/generate", "/import_relation",
                        "/download_relation", "/benchmark_set", "/list_relations", "/list_benchmark_sets", "/score_relation"}
    relation = api["/generate"]["parameters"][0]
    assert relation["parameter_name"] == "relation" and SHIPPED in relation["type"]["enum"]
    assert api["/list_relations"]["parameters"] == [] and api["/list_benchmark_sets"]["parameters"] == []
    train = {p["parameter_name"]: p for p in api["/train"]["parameters"]}
    assert all(p["parameter_has_default"] for p in train.values())
    assert {k: train[k]["type"]["type"] for k in ("steps", "seed", "batch_size", "grad_accum")} == dict.fromkeys(
        ("steps", "seed", "batch_size", "grad_accum"), "integer")
    assert [train[k]["parameter_default"] for k in ("keep", "validate_every", "validation_pairs", "stop_when_flat")] == [
        "last", 100, 8, 0]  # InversionSettings' defaults
    assert train["keep"]["type"]["enum"] == ["last", "best"]
    labels = [r["label"] for r in api["/train"]["returns"]]
    assert labels == ["Status", "Loss", "Steering loss", "Previews", "Vocabulary words nearest to <R>", "Relation",
                      "Relation to continue", "Quality on validation pairs", "Validation", "Latest validation images"]
    assert [r["label"] for r in api["/continue_training"]["returns"]] == labels


def test_without_clip_on_disk_the_train_status_says_validation_is_off_in_one_sentence(client):
    from reversion_core.clip_metrics import DEFAULT_CLIP_MODEL, clip_on_disk

    if clip_on_disk(DEFAULT_CLIP_MODEL):
        pytest.skip("CLIP's weights are in this machine's Hugging Face cache, so validation runs")
    job = client.submit(set_name="above", name="no_clip", steps=1, batch_size=1, grad_accum=1, preview_every=0, validate_every=1,
                        api_name="/train")
    status = job.result(timeout=RESULT_TIMEOUT)[0]  # the tiny model is no world model: its images need CLIP
    assert status.startswith("Finished at step 1")
    assert status.endswith(f"\n\nValidation is off: the CLIP model {DEFAULT_CLIP_MODEL!r} that would score its images is not "
                           "on disk; download it where there is network access and pass its folder with --clip-model (in the app, or "
                           "its variable REVERSION_CLIP_MODEL).")


def test_lists_the_benchmark_sets_and_trains_on_one_by_keyword(client, app):
    sets = client.predict(api_name="/list_benchmark_sets")
    assert "above" in sets and "painted_on" in sets
    job = client.submit(set_name="painted_on", name="by_keyword", steps=2, batch_size=1, grad_accum=1, preview_every=0,
                        api_name="/train")
    assert job.result(timeout=RESULT_TIMEOUT)[0].startswith("Finished at step 2")
    card = json.loads((app[1] / "by_keyword" / "card.json").read_text())
    assert card["relation"]["name"] == "painted_on"


@pytest.mark.parametrize("field, value, message", [
    ("learning_rate", 1e9, "Learning rate must be a number from 1e-07 to 0.1, not 1000000000.0."),
    ("learning_rate", "abc", "Learning rate must be a number from 1e-07 to 0.1, not 'abc'."),
    ("seed", 2**70, f"Seed must be a whole number from 0 to {2**63 - 1}, not {2**70}."),
    ("steps", 0, "Steps must be a whole number from 1 to 3000, not 0."),
    ("steps", 2.5, "Steps must be a whole number from 1 to 3000, not 2.5."),
    ("batch_size", 1.5, "Batch size must be a whole number from 1 to 8, not 1.5."),
])
def test_training_fields_out_of_range_are_refused(client, field, value, message):
    assert error_of(lambda: client.predict(name="x", api_name="/prepare_training", **{field: value})) == message


def test_a_generation_seed_past_64_bits_is_refused(client):
    message = error_of(lambda: client.predict(SHIPPED, "Entities", "red circle", "blue square", "", "", "", 1, 2, 7.5,
                                              2**70, api_name="/generate"))
    assert message == f"Seed must be a whole number from 0 to {2**63 - 1}, not {2**70}."


def test_an_upload_over_the_size_limit_is_refused_by_the_server(app, tmp_path):
    import httpx

    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(65 * 2**20)  # the app's default limit is 64 MB
    with open(big, "rb") as f:
        response = httpx.post(f"{app[0]}gradio_api/upload", files={"files": ("big.png", f)}, timeout=60)
    assert response.status_code == 413


def test_the_default_temp_dir_is_private_and_unpredictable(tmp_path):
    import app as studio_app

    first, second = studio_app.make_temp_dir(None), studio_app.make_temp_dir(None)
    try:
        assert first != second and first.parent == second.parent
        assert (first.stat().st_mode & 0o777) == 0o700
        assert studio_app.make_temp_dir(str(tmp_path / "named")) == tmp_path / "named"
    finally:
        first.rmdir()
        second.rmdir()


def test_a_training_goes_on_when_its_stream_is_closed(client, app):
    job = client.submit(*train_args("outlives_stream", numbers=LONG), api_name="/train")
    for update in job:
        if has_points(update):
            break
    seen = max(row[0] for row in update[1]["data"])
    job.cancel()  # the connection goes away, as when a browser tab closes
    time.sleep(2.0)
    assert client.predict(api_name="/stop").startswith("Stopping after this step")
    card_path = app[1] / "outlives_stream" / "card.json"
    deadline = time.monotonic() + RESULT_TIMEOUT
    while not card_path.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    card = json.loads(card_path.read_text())
    assert card["status"] == "stopped" and card["steps"] > seen


def test_continuing_a_relation_gives_the_vector_of_one_longer_run(client, app):
    from reversion_core.relation_file import load_relation

    six = [6, *QUICK[1:]]
    assert client.submit(*train_args("straight_six", numbers=six), api_name="/train").result(timeout=RESULT_TIMEOUT)[0].startswith("Finished")
    assert client.submit(*train_args("continued", numbers=QUICK), api_name="/train").result(timeout=RESULT_TIMEOUT)[0].startswith("Finished")
    status, plot, *_ = client.submit("continued", 3, api_name="/continue_training").result(timeout=RESULT_TIMEOUT)
    assert status.startswith("Finished at step 6")
    assert sorted({row[0] for row in plot["data"]}) == [1, 2, 3, 4, 5, 6]  # the plot goes on from the first part
    continued, straight = load_relation("continued", app[1]), load_relation("straight_six", app[1])
    assert continued.card["steps"] == 6
    assert torch.allclose(continued.vector, straight.vector, rtol=1e-5, atol=1e-6)


def test_a_relation_without_a_checkpoint_cannot_be_continued(client):
    message = error_of(lambda: client.predict(SHIPPED, 3, api_name="/continue_training"))
    assert message == f"Relation {SHIPPED!r} has no checkpoint to continue from; only relations trained in this app can be continued."


def test_the_app_takes_attention_and_device_flags():
    import app as studio_app

    args = studio_app.parse_args(["--attention", "xformers", "--device", "cpu", "--max-file-size", "10mb"])
    assert (args.attention, args.device, args.max_file_size) == ("xformers", "cpu", "10mb")
    assert studio_app.parse_args([]).attention is None  # chosen with the hardware: sdpa on CPU, xformers where it works


def test_stop_answers_apart_from_the_status_box_the_run_reports_its_end_in(app):
    """Stop's answer goes to its own (hidden) output and its toast: were it written to the status box, an answer that
    arrived after the run's own "Stopped ..." would cover it (the browser test of an overwrite run saw exactly that)."""
    import httpx

    config = httpx.get(f"{app[0]}config", timeout=10).json()
    ids = {c.get("props", {}).get("elem_id"): c["id"] for c in config["components"]}
    stop = next(d for d in config["dependencies"] if d.get("api_name") == "stop")
    assert stop["outputs"] == [ids["train-stop-answer"]] and ids["train-status"] not in stop["outputs"]
