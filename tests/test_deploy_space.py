"""Deploying to a Space: the file set by rule, the dry run, LFS rules for binaries, one-sentence errors, the Hub calls
(everything short of HTTP), and the app started from exactly the files a deployment sends."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import deploy_space  # noqa: E402

SCRIPT = ROOT / "scripts" / "deploy_space.py"
BAD_ID = "{!r} is not a Space id; write it as OWNER/NAME, for example alice/reversion-studio."


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


def write(folder: Path, path: str, text: str = "x") -> None:
    (folder / path).parent.mkdir(parents=True, exist_ok=True)
    (folder / path).write_text(text)


# ----------------------------------------------------------------------------------------------- the file set
def test_the_file_set_is_chosen_by_rule_from_what_git_tracks_or_does_not_ignore(tmp_path):
    for path in ("app.py", "requirements.txt", "README.md", ".gitattributes", "pyproject.toml", "notes.txt",
                 "reversion_core/__init__.py", "reversion_core/data/words.json", "ui/__init__.py", "ui/tab.py",
                 "assets/base-model/unet/config.json", "relations/above/card.json", "tests/test_app.py",
                 "benchmarks/perf.py", "scripts/__init__.py", "scripts/deploy_space.py", "docs/a.md",
                 "checkpoints/c.json", ".ci/run", "gone/__init__.py"):
        write(tmp_path, path)
    write(tmp_path, ".gitignore", "/runs/\n__pycache__/\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    (tmp_path / "gone" / "__init__.py").unlink()  # still in the index, no longer in the working tree
    for path in ("server/__init__.py", "server/hosting.py", "server/__pycache__/hosting.cpython-311.pyc", "runs/r/log.txt",
                 "ui/__pycache__/tab.cpython-311.pyc"):
        write(tmp_path, path)  # untracked: a new package goes, ignored and compiled files do not
    assert deploy_space.space_files(tmp_path) == [
        ".gitattributes", "README.md", "app.py", "assets/base-model/unet/config.json", "relations/above/card.json",
        "requirements.txt", "reversion_core/__init__.py", "reversion_core/data/words.json", "server/__init__.py",
        "server/hosting.py", "ui/__init__.py", "ui/tab.py",
    ]


def test_outside_a_git_checkout_the_file_set_is_refused_in_one_sentence(tmp_path):
    with pytest.raises(deploy_space.ReVersionError, match=r"^.* is not a git checkout; run this from a clone of the repository\.$"):
        deploy_space.space_files(tmp_path)


def test_the_dry_run_lists_each_file_with_its_size_and_the_total(capsys):
    assert deploy_space.main(["alice/reversion-studio", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "The Space alice/reversion-studio would get these files (nothing is sent with --dry-run):"
    rows = [line.split(maxsplit=1) for line in lines[1:-1]]
    paths = [path for _, path in rows]
    assert paths == deploy_space.space_files()
    assert all(int(size.replace(",", "")) == (ROOT / path).stat().st_size for size, path in rows)
    total = sum((ROOT / p).stat().st_size for p in paths)
    assert lines[-1] == f"{len(paths)} files, {total / 1e6:.1f} MB ({total:,d} bytes)"
    for needed in ("app.py", "requirements.txt", "README.md", ".gitattributes", "reversion_core/__init__.py",
                   "ui/wiring.py", "assets/base-model/model_index.json", "relations/above/learned_embeds.safetensors"):
        assert needed in paths
    assert not [p for p in paths if p.split("/")[0] in ("tests", "checkpoints", "docs", "benchmarks", "scripts", ".ci")]


def test_every_binary_file_of_the_tree_is_stored_with_lfs_by_gitattributes():
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    binary = []
    for path in filter(None, listed):
        file = ROOT / path
        if file.is_file() and (b"\0" in file.read_bytes()[:8000] or file.stat().st_size > 10 * 2**20):  # git's test; the Hub's 10 MB
            binary.append(path)
    assert any(p.endswith(".safetensors") for p in binary) and any(p.endswith(".png") for p in binary)
    attributes = subprocess.run(["git", "check-attr", "filter", "--", *binary], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.splitlines()
    assert [line for line in attributes if not line.endswith(": filter: lfs")] == []


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("space_id", ["bad id", "alice", "alice/studio/extra", "alice/re--studio"])
def test_a_malformed_space_id_is_refused_in_one_sentence(space_id, capsys):
    assert deploy_space.main([space_id, "--dry-run"]) == 2
    assert capsys.readouterr().err == f"error: {BAD_ID.format(space_id)}\n"


def test_without_a_token_it_says_how_to_log_in_without_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    done = subprocess.run([sys.executable, str(SCRIPT), "alice/reversion-studio"], capture_output=True, text=True,
                          env={**env, "HF_HOME": str(tmp_path / "hf")}, timeout=120)
    assert done.returncode == 2
    assert done.stderr == "error: No Hugging Face token was found; set HF_TOKEN or run `hf auth login`, then run this again.\n"


# ----------------------------------------------------------------------------------------------- the Hub, short of HTTP
class FakeHub:
    """Stands in for the Hub behind HfApi's public methods; records what the deployment asks of it."""

    def __init__(self, exists: bool, remote: list[str], readme: str | None = None, refuse=None):
        self.exists, self.remote, self.readme, self.refuse = exists, remote, readme, refuse
        self.calls: dict = {}

    def install(self, monkeypatch):
        from huggingface_hub import HfApi

        hub = self

        def repo_exists(api, repo_id, *, repo_type=None, **_):
            return hub.exists

        def create_repo(api, repo_id, **kwargs):
            if hub.refuse is not None:
                raise hub.refuse
            hub.calls["create_repo"] = (repo_id, kwargs)

        def list_repo_files(api, repo_id, *, repo_type=None, **_):
            return list(hub.remote)

        def hf_hub_download(api, repo_id, filename, *, repo_type=None, local_dir=None, **_):
            path = Path(local_dir) / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(hub.readme)
            return str(path)

        def create_commit(api, repo_id, operations, *, commit_message, repo_type=None, **_):
            from huggingface_hub import CommitOperationAdd

            hub.calls["create_commit"] = {
                "repo_id": repo_id, "repo_type": repo_type, "message": commit_message, "token": api.token,
                "added": {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations
                          if isinstance(op, CommitOperationAdd)},
                "deleted": [op.path_in_repo for op in operations if not isinstance(op, CommitOperationAdd)],
            }
            return type("CommitInfo", (), {"oid": "0123456789abcdef"})()

        for name, fn in (("repo_exists", repo_exists), ("create_repo", create_repo), ("list_repo_files", list_repo_files),
                         ("hf_hub_download", hf_hub_download), ("create_commit", create_commit)):
            monkeypatch.setattr(HfApi, name, fn)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        return self


THEIR_README = """---
title: My Relation Studio
emoji: 🐇
sdk: gradio
sdk_version: 5.0.0
app_file: main.py
hf_oauth: true
---

# Their words
"""


def test_a_new_space_is_created_with_the_gradio_sdk_and_gets_exactly_the_file_set(monkeypatch, capsys):
    hub = FakeHub(exists=False, remote=[".gitattributes", "README.md"], readme=THEIR_README).install(monkeypatch)
    assert deploy_space.main(["alice/reversion-studio"]) == 0
    assert hub.calls["create_repo"] == ("alice/reversion-studio", {"repo_type": "space", "space_sdk": "gradio",
                                                                   "private": False, "exist_ok": True})
    commit = hub.calls["create_commit"]
    files = deploy_space.space_files()
    assert (commit["repo_id"], commit["repo_type"], commit["token"]) == ("alice/reversion-studio", "space", "hf_test_token")
    assert sorted(commit["added"]) == files and commit["deleted"] == []
    assert all(commit["added"][f] == (ROOT / f).read_bytes() for f in files)  # a new Space's template README is replaced
    assert capsys.readouterr().out == f"Deployed {len(files)} files to https://huggingface.co/spaces/alice/reversion-studio (commit 01234567).\n"


def test_updating_a_space_deletes_what_it_no_longer_needs_and_keeps_its_own_readme_metadata(monkeypatch, capsys):
    from huggingface_hub import RepoCard

    remote = [".gitattributes", "README.md", "app.py", "old_module.py", "reversion_core/studio_old.py"]
    hub = FakeHub(exists=True, remote=remote, readme=THEIR_README).install(monkeypatch)
    assert deploy_space.main(["alice/reversion-studio", "--message", "v2"]) == 0
    commit = hub.calls["create_commit"]
    assert commit["deleted"] == ["old_module.py", "reversion_core/studio_old.py"] and commit["message"] == "v2"
    ours, uploaded = RepoCard.load(ROOT / "README.md"), RepoCard(commit["added"]["README.md"].decode("utf-8"))
    assert uploaded.data.to_dict() == {**ours.data.to_dict(), "title": "My Relation Studio", "emoji": "🐇", "hf_oauth": True}
    assert uploaded.text == ours.text
    assert "deleting 2 it no longer needs" in capsys.readouterr().out


def test_a_space_readme_whose_metadata_is_not_yaml_is_one_sentence(monkeypatch, capsys):
    FakeHub(exists=True, remote=["README.md"], readme="---\ntitle: [unclosed\n---\n# Their words\n").install(monkeypatch)
    assert deploy_space.main(["alice/reversion-studio"]) == 2
    assert capsys.readouterr().err == ("error: The Space's README.md starts with metadata that cannot be read as YAML; "
                                       "fix or remove it on the Hub, then deploy again.\n")


def test_a_refusal_by_the_hub_is_one_sentence(monkeypatch, capsys):
    from huggingface_hub.errors import HfHubHTTPError

    try:
        import httpx2 as httpx  # the HTTP client of huggingface_hub 2.x
    except ImportError:
        import httpx
    response = httpx.Response(403, request=httpx.Request("POST", "https://huggingface.co/api/repos/create"))
    refusal = HfHubHTTPError("403 Forbidden: You don't have the rights to create a space under the namespace 'bob'.",
                             response=response)
    FakeHub(exists=False, remote=[], refuse=refusal).install(monkeypatch)
    assert deploy_space.main(["bob/reversion-studio"]) == 2
    assert capsys.readouterr().err == (
        "error: The Hugging Face Hub refused the deployment to bob/reversion-studio: 403 Forbidden: You don't have the "
        "rights to create a space under the namespace 'bob'.\n")


def test_an_unreachable_hub_is_one_sentence(monkeypatch, capsys):
    FakeHub(exists=False, remote=[], refuse=ConnectionError("[Errno -3] Temporary failure in name resolution")).install(monkeypatch)
    assert deploy_space.main(["alice/reversion-studio"]) == 2
    assert capsys.readouterr().err == (
        "error: The Hugging Face Hub could not be reached ([Errno -3] Temporary failure in name resolution); check the "
        "network and try again.\n")


# ----------------------------------------------------------------------------------------------- the deployed app
@pytest.mark.slow
def test_the_space_folder_alone_serves_the_page_and_generates_on_the_embedded_model(tmp_path):
    from test_app import free_port, wait_until_served
    from gradio_client import Client

    space = tmp_path / "space"
    assert deploy_space.main(["alice/reversion-studio", "--folder", str(space)]) == 0
    sent = sorted(str(p.relative_to(space)) for p in space.rglob("*") if p.is_file())
    assert sent == deploy_space.space_files()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVERSION_", "SPACE", "GRADIO_"))}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", REVERSION_TEMP_DIR=str(tmp_path / "tmp"))
    where = subprocess.run([sys.executable, "-c", "import reversion_core, ui; print(reversion_core.__file__, ui.__file__)"],
                           cwd=space, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(space) for p in where)  # the folder's own packages, not the repository's
    port = free_port()
    with open(tmp_path / "app.log", "w") as log:
        process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=space, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_served(url, process)
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200 and "<html" in page.read().decode("utf-8", "replace").lower()
        with urllib.request.urlopen(f"{url}config", timeout=10) as response:
            header = next(c["props"]["value"] for c in json.load(response)["components"] if c["props"].get("elem_id") == "header")
        assert "Running **Embedded miniature model on CPU (fp32, SDPA)**." in header
        client = Client(url, verbose=False)
        assert "above" in client.predict(api_name="/list_relations")
        images, prompt = client.predict("above", "Entities", "red circle", "blue square", "", "", "", 1, 3, 7.5, 0,
                                        api_name="/generate")
        assert len(images) == 1 and "red circle <R> blue square" in prompt
    finally:
        process.terminate()
        process.wait(20)
