"""The app in public mode, driven through gradio_client: each API session is one visitor with a workspace of their
own beside the shipped relations, every quota refused in one sentence, workspaces kept across a restart in the data
dir, and the page saying what runs where."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from test_app import (
    LONG, RESULT_TIMEOUT, SHIPPED, error_of, free_port, has_points, launch_app, make_shipped_relation, train_args,
    wait_until_served, write_image,
)

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

LIMITS = {"REVERSION_MAX_RELATIONS": "3", "REVERSION_MAX_STEPS": "2000", "REVERSION_UPLOAD_MB": "0.5",
          "REVERSION_DISK_MB": "5"}


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def serve(model_dir: Path, base: Path, data: Path) -> tuple[str, subprocess.Popen]:
    """A public app on the tiny model with one shipped relation and the test's limits, keeping its data in ``data``."""
    port = free_port()
    process = launch_app(model_dir, base / "relations", base / "tmp", port, "--public",
                         env={**LIMITS, "REVERSION_DATA_DIR": str(data)})
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_served(url, process)
    except Exception:
        stop(process)
        raise
    return url, process


@pytest.fixture(scope="module")
def public_app(tiny_model_dir, tmp_path_factory):
    """(url, shipped relations dir, data dir) of a running public app."""
    base = tmp_path_factory.mktemp("public_app")
    (base / "tmp").mkdir()
    make_shipped_relation(tiny_model_dir, base / "relations")
    url, process = serve(tiny_model_dir, base, base / "data")
    try:
        yield url, base / "relations", base / "data"
    finally:
        stop(process)


def visitor(app) -> Client:
    return Client(app[0], verbose=False)  # its own session: one visitor


def vector_file(path: Path, value: float = 1.0) -> Path:
    save_file({"<R>": torch.full((32,), value)}, str(path))
    return path


def import_relation(client: Client, path: Path, name: str, overwrite: bool = False) -> str:
    return client.predict([handle_file(path)], name, overwrite, api_name="/import_relation")


def names(client: Client) -> list[str]:
    return client.predict(api_name="/list_relations")


def own_folder(data: Path, name: str) -> list[Path]:
    return list((data / "workspaces").glob(f"v-*/relations/{name}"))


# ----------------------------------------------------------------------------------------------- what runs where
def test_the_header_names_the_base_model_and_the_device_of_each_hardware(tmp_path):
    import app as studio_app
    from server.hosting import pick_runtime
    from server.studio import Studio

    cases = [({"SPACES_ZERO_GPU": "true"}, {}, "Running **SD 1.5 on ZeroGPU (fp16, SDPA)**."),
             ({}, {"cuda_available": True, "xformers_works": True, "gpu_name": "NVIDIA L4"},
              "Running **SD 1.5 on NVIDIA L4 (fp16, xformers)**."),
             ({}, {"cuda_available": False}, "Running **Embedded miniature model on CPU (fp32, SDPA)**.")]
    for env, probes, line in cases:
        studio = Studio(relations_dir=tmp_path, temp_dir=tmp_path / "tmp", runtime=pick_runtime(env, **probes))
        assert line in studio_app.header_text(studio).split("\n\n")


def test_the_served_page_shows_its_base_model_device_and_public_mode(public_app):
    with urllib.request.urlopen(f"{public_app[0]}config", timeout=10) as response:
        config = json.load(response)
    header = next(c["props"]["value"] for c in config["components"] if c["props"].get("elem_id") == "header")
    assert "Running **model on CPU (fp32, SDPA)**." in header  # the tiny model's folder is named "model"
    assert "**Public mode**: what you train or import is yours alone" in header
    assert "Up to 3 relations, 2000 steps a run, one training at a time, uploads up to 0.5 MB" in header


# ----------------------------------------------------------------------------------------------- two visitors
def test_two_visitors_see_the_shipped_relations_and_only_their_own(public_app, tmp_path):
    alice, bob = visitor(public_app), visitor(public_app)
    import_relation(alice, vector_file(tmp_path / "a.safetensors"), "alices")
    assert names(alice) == ["alices", SHIPPED]
    assert names(bob) == [SHIPPED]
    message = error_of(lambda: bob.predict("alices", api_name="/download_relation"))
    assert message == "There is no relation named 'alices' among the shipped relations and yours."


def test_a_visitor_cannot_overwrite_another_visitors_relation(public_app, tmp_path):
    from reversion_core.relation_file import load_relation

    alice, bob = visitor(public_app), visitor(public_app)
    import_relation(alice, vector_file(tmp_path / "a.safetensors", 1.0), "same_name")
    import_relation(bob, vector_file(tmp_path / "b.safetensors", 2.0), "same_name", overwrite=True)
    folders = own_folder(public_app[2], "same_name")
    assert len(folders) == 2  # one folder each, in two workspaces
    assert sorted(float(load_relation(f, None).vector[0]) for f in folders) == [1.0, 2.0]
    zipped = Path(alice.predict("same_name", api_name="/download_relation")["value"])
    with zipfile.ZipFile(zipped) as z:
        assert sorted(z.namelist()) == ["same_name/card.json", "same_name/learned_embeds.safetensors"]
    message = error_of(lambda: bob.predict("alices_never", api_name="/delete_relation"))
    assert message == "You have no relation named 'alices_never'."


def test_the_shipped_relations_cannot_be_overwritten_or_deleted(public_app, tmp_path):
    before = (public_app[1] / SHIPPED / "learned_embeds.safetensors").read_bytes()
    client = visitor(public_app)
    message = error_of(lambda: import_relation(client, vector_file(tmp_path / "x.safetensors"), SHIPPED, overwrite=True))
    assert message == f"{SHIPPED!r} is one of the shipped relations, which nobody can overwrite; choose another name."
    message = error_of(lambda: client.predict(*train_args(SHIPPED, overwrite=True), api_name="/prepare_training"))
    assert message == f"{SHIPPED!r} is one of the shipped relations, which nobody can overwrite; choose another name."
    message = error_of(lambda: client.predict(SHIPPED, api_name="/delete_relation"))
    assert message == f"{SHIPPED!r} is one of the shipped relations, which nobody can delete."
    assert (public_app[1] / SHIPPED / "learned_embeds.safetensors").read_bytes() == before


def test_a_training_lands_in_the_visitors_workspace_and_nowhere_else(public_app):
    alice, bob = visitor(public_app), visitor(public_app)
    status = alice.submit(*train_args("alices_run"), api_name="/train").result(timeout=RESULT_TIMEOUT)[0]
    assert status.startswith("Finished at step 3")
    assert "alices_run" in names(alice) and "alices_run" not in names(bob)
    assert not (public_app[1] / "alices_run").exists() and len(own_folder(public_app[2], "alices_run")) == 1
    message = error_of(lambda: bob.predict("alices_run", 2, api_name="/continue_training"))
    assert message == "There is no relation named 'alices_run' among the shipped relations and yours."
    runs = list(public_app[2].glob("workspaces/v-*/runs/alices_run"))
    assert len(runs) == 1 and list(runs[0].glob("step-*.pt"))  # kept for continuing, in alice's workspace
    alice.predict("alices_run", api_name="/delete_relation")
    assert "alices_run" not in names(alice) and not runs[0].exists()  # deleting leaves nothing of it behind


def test_a_page_key_chosen_by_a_client_is_replaced_by_one_the_server_issues(public_app, tmp_path):
    import httpx

    from server.workspaces import visitor_folder

    url, _, data = public_app
    config = httpx.get(f"{url}config", timeout=10).json()
    load = next(d for d in config["dependencies"] if d.get("api_name") == "page_owner")  # the page's load event
    session = "chooses-its-key"
    answer = httpx.post(f"{url}gradio_api/run/predict", timeout=10,
                        json={"data": ["someone-elses-key"], "fn_index": load["id"], "session_hash": session}).json()
    issued = answer["data"][0]
    assert issued != "someone-elses-key" and len(issued) == 65  # a nonce and its signature
    client = visitor(public_app)
    client.session_hash = session
    import_relation(client, vector_file(tmp_path / "k.safetensors"), "keyed")
    secret = (data / "workspaces" / ".secret").read_text().strip()
    assert own_folder(data, "keyed") == [data / "workspaces" / visitor_folder(f"page:{issued}", secret) / "relations" / "keyed"]


# ----------------------------------------------------------------------------------------------- quotas
def test_relations_per_visitor_are_limited_and_deleting_one_makes_room(public_app, tmp_path):
    client = visitor(public_app)
    for k in range(3):
        import_relation(client, vector_file(tmp_path / f"r{k}.safetensors"), f"r{k}")
    message = error_of(lambda: import_relation(client, vector_file(tmp_path / "r3.safetensors"), "r3"))
    assert message == "You have 3 relations, the most one visitor may keep here; delete one to make room."
    client.predict("r0", api_name="/delete_relation")
    import_relation(client, vector_file(tmp_path / "r3.safetensors"), "r3")
    assert names(client) == ["r1", "r2", "r3", SHIPPED]


def test_training_steps_per_run_are_limited(public_app):
    message = error_of(lambda: visitor(public_app).predict(*train_args("too_long", numbers=[2500, *LONG[1:]]),
                                                          api_name="/prepare_training"))
    assert message == "A training run here may take at most 2000 steps, not 2500; lower the steps."


def test_uploads_together_larger_than_the_limit_are_refused(public_app, tmp_path):
    files = []
    for k in range(2):  # each under the server's per-file limit, together over the 0.5 MB of one request
        noise = torch.randint(0, 256, (320, 320, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(k)).numpy()
        from PIL import Image

        path = tmp_path / f"{k}.png"
        Image.fromarray(noise).save(path, compress_level=0)
        files.append(path)
    assert all(f.stat().st_size < 0.5 * 2**20 for f in files) and sum(f.stat().st_size for f in files) > 0.5 * 2**20
    message = error_of(lambda: visitor(public_app).predict(*train_args("big", source="Upload", files=files,
                                                                      captions="a <R> b\nc <R> d"), api_name="/prepare_training"))
    assert message == "The upload is 0.6 MB; this app accepts at most 0.5 MB at a time."


def test_a_visitor_has_one_training_at_a_time(public_app):
    client = visitor(public_app)
    job = client.submit(*train_args("first_run", numbers=LONG), api_name="/train")
    try:
        for update in job:
            if has_points(update):
                break
        message = error_of(lambda: client.predict(*train_args("second_run"), api_name="/prepare_training"))
        assert message == "You already have a training running or waiting; stop it or let it finish before starting another."
        # the waiting visitor is not told the other visitor's relation name
        assert visitor(public_app).predict(*train_args("someone_else"), api_name="/prepare_training") == (
            "Waiting: another training is running; yours starts as soon as it ends.")
    finally:
        client.predict(api_name="/stop")
    assert job.result(timeout=RESULT_TIMEOUT)[0].startswith("Stopped")


def test_a_full_disk_refuses_new_relations_in_one_sentence(public_app, tmp_path):
    filler = public_app[2] / "workspaces" / "v-filler"
    filler.mkdir(parents=True)
    (filler / "blob").write_bytes(b"\0" * (5 * 2**20))  # the other visitors' data fills the 5 MB
    try:
        message = error_of(lambda: import_relation(visitor(public_app), vector_file(tmp_path / "x.safetensors"), "one_more"))
        assert message == ("This app's storage for visitors' relations is full (5 MB); try again later, when idle "
                           "workspaces have been cleaned.")
    finally:
        (filler / "blob").unlink()


# ----------------------------------------------------------------------------------------------- restart
def test_a_visitors_relations_survive_a_restart_with_a_data_dir(tiny_model_dir, tmp_path):
    (tmp_path / "tmp").mkdir()
    make_shipped_relation(tiny_model_dir, tmp_path / "relations")
    url, process = serve(tiny_model_dir, tmp_path, tmp_path / "data")
    try:
        first = Client(url, verbose=False)
        import_relation(first, vector_file(tmp_path / "kept.safetensors"), "kept")
    finally:
        stop(process)
    url, process = serve(tiny_model_dir, tmp_path, tmp_path / "data")
    try:
        again = Client(url, verbose=False)
        assert names(again) == [SHIPPED]  # a new visitor
        again.session_hash = first.session_hash  # the same visitor comes back
        assert names(again) == ["kept", SHIPPED]
    finally:
        stop(process)
