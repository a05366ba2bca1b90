"""Public mode: per-visitor workspaces, read-only shipped relations, quotas, idle cleanup and persistence."""
import os
import time
from pathlib import Path

import pytest
import torch

from reversion_core.errors import ReVersionError
from reversion_core.relation_file import RelationPrompt, load_relation, save_relation
from server.workspaces import Limits, Workspaces, data_dir, use_data_dir_for_hub_cache, visitor_folder


def make_relation(folder: Path, name: str, value: float = 1.0) -> Path:
    return save_relation(RelationPrompt(name, "<R>", torch.full((32,), value), {"base_model": "tiny#0123456789"}), folder)


@pytest.fixture
def shipped(tmp_path) -> Path:
    folder = tmp_path / "shipped"
    make_relation(folder, "above")
    return folder


@pytest.fixture
def data(tmp_path) -> Path:
    return tmp_path / "data"


def names(workspace):
    return [r.path.name for r in workspace.relations()]


# ----------------------------------------------------------------------------------------------- data dir
def test_data_dir_is_the_variable_then_spaces_storage_then_none(tmp_path):
    mounted = tmp_path / "mounted"
    assert data_dir({"REVERSION_DATA_DIR": str(tmp_path / "mine")}, spaces_data=mounted) == tmp_path / "mine"
    assert (tmp_path / "mine").is_dir()
    assert data_dir({}, spaces_data=mounted) is None
    mounted.mkdir()
    assert data_dir({}, spaces_data=mounted) == mounted


def test_hub_cache_moves_into_the_data_dir_unless_the_host_set_it(tmp_path):
    env = {}
    assert use_data_dir_for_hub_cache(tmp_path, env) == tmp_path / "huggingface"
    assert env["HF_HOME"] == str(tmp_path / "huggingface")
    env = {"HF_HOME": "/elsewhere"}
    assert use_data_dir_for_hub_cache(tmp_path, env) == Path("/elsewhere")
    assert use_data_dir_for_hub_cache(None, {}) is None


# ----------------------------------------------------------------------------------------------- two visitors
def test_two_visitors_see_the_shipped_relations_and_only_their_own(shipped, data):
    workspaces = Workspaces(shipped, data)
    alice, bob = workspaces.for_visitor("session-alice"), workspaces.for_visitor("session-bob")
    make_relation(alice.relations_dir, "mine")
    assert names(alice) == ["above", "mine"]
    assert names(bob) == ["above"]
    with pytest.raises(ReVersionError, match=r"^There is no relation named 'mine' among the shipped relations and yours\.$"):
        bob.relation_path("mine")


def test_a_visitor_cannot_overwrite_or_delete_another_visitors_relation(shipped, data):
    workspaces = Workspaces(shipped, data)
    alice, bob = workspaces.for_visitor("session-alice"), workspaces.for_visitor("session-bob")
    make_relation(alice.relations_dir, "mine", 1.0)
    bob.check_new_relation("mine")  # the name is free in bob's workspace: his own "mine" is a different relation
    make_relation(bob.relations_dir, "mine", 2.0)
    bob.delete("mine")
    with pytest.raises(ReVersionError, match=r"^You have no relation named 'mine'\.$"):
        bob.delete("mine")
    assert torch.equal(alice.load("mine").vector, torch.full((32,), 1.0))


def test_shipped_relations_cannot_be_overwritten_or_deleted(shipped, data):
    visitor = Workspaces(shipped, data).for_visitor("session-alice")
    with pytest.raises(ReVersionError, match=r"^'above' is one of the shipped relations, which nobody can overwrite; choose another name\.$"):
        visitor.check_new_relation("above", overwrite=True)
    with pytest.raises(ReVersionError, match=r"^'above' is one of the shipped relations, which nobody can delete\.$"):
        visitor.delete("above")
    assert (shipped / "above").is_dir()


def test_an_existing_own_relation_needs_overwrite(shipped, data):
    visitor = Workspaces(shipped, data).for_visitor("session-alice")
    make_relation(visitor.relations_dir, "mine")
    with pytest.raises(ReVersionError, match=r"^You already have a relation named 'mine'; tick 'Overwrite' or choose another name\.$"):
        visitor.check_new_relation("mine")
    visitor.check_new_relation("mine", overwrite=True)


def test_a_visitor_key_cannot_reach_outside_the_workspaces(shipped, data):
    workspaces = Workspaces(shipped, data)
    workspace = workspaces.for_visitor("../../etc")
    assert workspace.path.parent == workspaces.root and workspace.path.name.startswith("v-")
    with pytest.raises(ReVersionError, match=r"^This visitor has no session key; reload the page\.$"):
        workspaces.for_visitor("")


# ----------------------------------------------------------------------------------------------- quotas
def test_relations_per_visitor_are_limited(shipped, data):
    visitor = Workspaces(shipped, data, Limits(relations_per_visitor=2)).for_visitor("session-alice")
    make_relation(visitor.relations_dir, "one")
    make_relation(visitor.relations_dir, "two")
    with pytest.raises(ReVersionError, match=r"^You have 2 relations, the most one visitor may keep here; delete one to make room\.$"):
        visitor.check_new_relation("three")
    visitor.check_new_relation("two", overwrite=True)  # replacing one does not add one


def test_total_disk_of_all_workspaces_is_limited(shipped, data):
    workspaces = Workspaces(shipped, data, Limits(total_disk_mb=0.01))  # about 10 kB
    make_relation(workspaces.for_visitor("session-alice").relations_dir, "one")
    bob = workspaces.for_visitor("session-bob")
    room = int(0.01 * 1024 * 1024) - workspaces.disk_used()
    assert room > 0
    bob.check_new_relation("fits", incoming=room)
    with pytest.raises(ReVersionError, match=r"^This app's storage for visitors' relations is full \(0\.01 MB\); try again later, when idle workspaces have been cleaned\.$"):
        bob.check_new_relation("too-big", incoming=room + 1)


def test_uploads_are_limited_in_size(shipped, data, tmp_path):
    workspaces = Workspaces(shipped, data, Limits(upload_mb=1))
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(b"x" * 1000)
    big.write_bytes(b"x" * (1024 * 1024 + 1))
    assert workspaces.check_upload([small]) == 1000
    with pytest.raises(ReVersionError, match=r"^The upload is 1\.0 MB; this app accepts at most 1 MB at a time\.$"):
        workspaces.check_upload([small, big])


def test_training_steps_per_run_are_limited(shipped, data):
    workspaces = Workspaces(shipped, data, Limits(train_steps=500))
    workspaces.check_train_steps(500)
    with pytest.raises(ReVersionError, match=r"^A training run here may take at most 500 steps, not 501; lower the steps\.$"):
        workspaces.check_train_steps(501)


def test_one_training_per_visitor_at_a_time(shipped, data):
    workspaces = Workspaces(shipped, data)
    alice, bob = workspaces.for_visitor("session-alice"), workspaces.for_visitor("session-bob")
    with alice.training():
        with pytest.raises(ReVersionError, match=r"^You already have a training running or waiting; stop it or let it finish before starting another\.$"):
            with workspaces.for_visitor("session-alice").training():
                pass
        with bob.training():  # another visitor is not held back
            pass
    with alice.training():  # free again once the first ended
        pass


# ----------------------------------------------------------------------------------------------- lifetime
def test_a_user_name_does_not_reveal_the_folder(shipped, data, tmp_path):
    here = Workspaces(shipped, data).for_visitor("alice")
    elsewhere = Workspaces(shipped, tmp_path / "other-data").for_visitor("alice")
    assert here.path.name != visitor_folder("alice") and here.path.name != elsewhere.path.name


def test_a_workspace_survives_a_restart_with_a_data_dir(shipped, data):
    make_relation(Workspaces(shipped, data).for_visitor("user-alice").relations_dir, "mine", 3.0)
    again = Workspaces(shipped, data).for_visitor("user-alice")  # a new process: everything built afresh
    assert names(again) == ["above", "mine"]
    assert torch.equal(again.load("mine").vector, torch.full((32,), 3.0))


def test_without_a_data_dir_workspaces_live_in_a_private_temporary_folder(shipped):
    workspaces = Workspaces(shipped, None)
    assert not workspaces.persistent
    assert (workspaces.root.stat().st_mode & 0o777) == 0o700


def test_idle_workspaces_are_cleaned_but_not_while_training(shipped, data):
    workspaces = Workspaces(shipped, data, Limits(idle_hours=1))
    old, busy, recent = (workspaces.for_visitor(k) for k in ("old", "busy", "recent"))
    for workspace in (old, busy):
        stamp = time.time() - 2 * 3600
        os.utime(workspace.path / ".visited", (stamp, stamp))
    with busy.training():
        removed = workspaces.cleanup_idle()
    assert removed == [old.path.name]
    assert not old.path.exists() and busy.path.exists() and recent.path.exists()


def test_using_a_workspace_again_keeps_it_from_cleanup(shipped, data):
    workspaces = Workspaces(shipped, data, Limits(idle_hours=1))
    workspace = workspaces.for_visitor("alice")
    stamp = time.time() - 2 * 3600
    os.utime(workspace.path / ".visited", (stamp, stamp))
    workspaces.for_visitor("alice")  # the visitor came back
    assert workspaces.cleanup_idle() == []


def test_a_deleted_relation_is_gone_whole(shipped, data):
    visitor = Workspaces(shipped, data).for_visitor("alice")
    make_relation(visitor.relations_dir, "mine")
    visitor.delete("mine")
    assert list(visitor.relations_dir.iterdir()) == []
    with pytest.raises(ReVersionError):
        load_relation("mine", visitor.relations_dir)


def test_the_periodic_cleanup_removes_idle_workspaces(shipped, data):
    workspaces = Workspaces(shipped, data, Limits(idle_hours=1))
    old = workspaces.for_visitor("old")
    stamp = time.time() - 2 * 3600
    os.utime(old.path / ".visited", (stamp, stamp))
    thread = workspaces.start_cleanup(every_s=0.01)
    deadline = time.time() + 10
    while old.path.exists() and time.time() < deadline:
        time.sleep(0.01)
    workspaces.stop_cleanup()
    thread.join(5)
    assert not old.path.exists() and not thread.is_alive()
