"""Relation prompts on disk: our folder format, foreign formats, atomic writes and refusals."""
import json
import os
import pickle

import pytest
import torch

from reversion_core.errors import ReVersionError
from reversion_core.relation_file import (
    RelationPrompt, check_name, free_relation_name, list_relations, load_relation, read_embedding_file, save_relation,
)


def make_relation(name="above", dim=32, card=None):
    return RelationPrompt(name, "<R>", torch.arange(dim, dtype=torch.float32) / dim, card or {"base_model": "tiny#abc"})


def test_saved_folder_round_trips_vector_and_card(tmp_path):
    path = save_relation(make_relation(), tmp_path)
    loaded = load_relation("above", tmp_path)
    assert path == tmp_path / "above"
    assert sorted(os.listdir(path)) == ["card.json", "learned_embeds.safetensors"]
    assert torch.equal(loaded.vector, make_relation().vector)
    assert loaded.token == "<R>" and loaded.card["embedding_dim"] == 32 and loaded.card["base_model"] == "tiny#abc"
    assert "created_at" in loaded.card


def test_saved_vector_loads_with_diffusers_textual_inversion(tmp_path, tiny_pipeline):
    path = save_relation(make_relation(), tmp_path)
    tiny_pipeline.load_textual_inversion(str(path / "learned_embeds.safetensors"))
    row = tiny_pipeline.tokenizer.convert_tokens_to_ids("<R>")
    assert torch.equal(tiny_pipeline.text_encoder.get_input_embeddings().weight[row], make_relation().vector)


def test_existing_relation_is_refused_unless_overwrite(tmp_path):
    save_relation(make_relation(), tmp_path)
    with pytest.raises(ReVersionError, match="already holds a relation; choose another name or allow overwriting"):
        save_relation(make_relation(), tmp_path)
    other = make_relation(card={"base_model": "other#123"})
    save_relation(other, tmp_path, overwrite=True)
    assert load_relation("above", tmp_path).card["base_model"] == "other#123"
    assert sorted(os.listdir(tmp_path)) == ["above"]  # no temporary folders left behind


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "a\\b", ""])
def test_names_with_path_separators_are_refused(tmp_path, name):
    with pytest.raises(ReVersionError, match="is not allowed"):
        save_relation(make_relation(name), tmp_path)


def test_surrounding_spaces_are_dropped_from_a_name(tmp_path):
    assert check_name("  abc ") == "abc"
    path = save_relation(make_relation("abc "), tmp_path)
    assert path == tmp_path / "abc" and sorted(os.listdir(tmp_path)) == ["abc"]
    assert load_relation("abc ", tmp_path).name == "abc"


@pytest.mark.parametrize("name", ["a.", "abc. ", "x.y."])
def test_names_ending_in_a_dot_are_refused(tmp_path, name):
    with pytest.raises(ReVersionError, match=r"Relation name '.*' is not allowed: it must not end with '\.'\."):
        save_relation(make_relation(name), tmp_path)
    assert not any(tmp_path.iterdir())


def test_free_relation_name_is_the_name_itself_when_untaken(tmp_path):
    assert free_relation_name(tmp_path, "above") == "above"
    assert free_relation_name(tmp_path / "missing", "above ") == "above"


def test_free_relation_name_counts_past_taken_names(tmp_path):
    for name in ("above", "above_2"):
        (tmp_path / name).mkdir()
    assert free_relation_name(tmp_path, "above") == "above_3"
    assert free_relation_name(tmp_path, "above_2") == "above_3"
    (tmp_path / "set_1").mkdir()
    assert free_relation_name(tmp_path, "set_1") == "set_1_2"


def test_free_relation_name_stays_within_the_length_limit(tmp_path):
    long = "a" * 100
    (tmp_path / long).mkdir()
    proposed = free_relation_name(tmp_path, long)
    assert proposed == "a" * 98 + "_2" and check_name(proposed) == proposed


def test_free_relation_name_refuses_an_unsafe_name(tmp_path):
    with pytest.raises(ReVersionError, match="is not allowed"):
        free_relation_name(tmp_path, "../evil")


def test_unknown_relation_name_lists_the_known_ones(tmp_path):
    save_relation(make_relation("above"), tmp_path)
    with pytest.raises(ReVersionError, match=r"No relation named 'below' in .* \(known: above\)\."):
        load_relation("below", tmp_path)


def test_official_learned_embeds_bin_round_trips(tmp_path):
    vector = torch.randn(32)
    torch.save({"<R>": vector}, tmp_path / "learned_embeds.bin")  # what the official ReVersion code writes
    relation = load_relation(tmp_path / "learned_embeds.bin")
    assert relation.token == "<R>" and torch.equal(relation.vector, vector)
    save_relation(relation, tmp_path / "relations")
    assert torch.equal(load_relation(tmp_path / "relations" / relation.name).vector, vector)


def test_diffusers_textual_inversion_bin_with_one_row_imports(tmp_path):
    torch.save({"<cat-toy>": torch.ones(1, 32)}, tmp_path / "learned_embeds.bin")
    token, vector = read_embedding_file(tmp_path / "learned_embeds.bin")
    assert token == "<cat-toy>" and vector.shape == (32,)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_bin_with_pickled_callable_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("evil.bin", "wb") as f:
        pickle.dump({"<R>": Payload()}, f)
    torch.save({"<R>": torch.zeros(4), "x": Payload()}, "evil2.bin")
    for name in ("evil.bin", "evil2.bin"):
        with pytest.raises(ReVersionError, match="contains pickled code, which is never executed"):
            load_relation(tmp_path / name)
    assert not (tmp_path / "pwned.txt").exists()


def test_file_of_wrong_format_is_refused(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ReVersionError, match="junk.safetensors is not a readable .safetensors file"):
        load_relation(tmp_path / "junk.safetensors")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ReVersionError, match="is not a relation file"):
        load_relation(tmp_path / "notes.txt")
    torch.save({"<a>": torch.ones(4), "<b>": torch.ones(4)}, tmp_path / "two.bin")
    with pytest.raises(ReVersionError, match="expected exactly one token with one tensor, found 2"):
        load_relation(tmp_path / "two.bin")


def test_vector_of_wrong_size_names_both_sizes():
    with pytest.raises(ReVersionError, match="has a vector of size 32 but the base model's text encoder uses size 768"):
        make_relation().check_dim(768)


def test_list_relations_filters_by_base_model(tmp_path):
    save_relation(make_relation("a", card={"base_model": "tiny#abc"}), tmp_path)
    save_relation(make_relation("b", card={"base_model": "sd15#fff"}), tmp_path)
    (tmp_path / "broken").mkdir()
    assert [r.name for r in list_relations(tmp_path)] == ["a", "b"]
    assert [r.name for r in list_relations(tmp_path, base_model_id="elsewhere/tiny#abc")] == ["a"]


# ----------------------------------------------------------------------------------------------- damaged folders
def test_a_damaged_folder_is_skipped_with_a_logged_sentence_and_lookups_keep_working(tmp_path, caplog):
    save_relation(make_relation("good"), tmp_path)
    for bad, card in (("card_list", [1, 2]), ("base_list", {"base_model": ["a"]}), ("dim_text", {"embedding_dim": "32"})):
        save_relation(make_relation(bad), tmp_path)
        (tmp_path / bad / "card.json").write_text(json.dumps(card))
    with caplog.at_level("WARNING", logger="reversion_core"):
        assert [r.name for r in list_relations(tmp_path)] == ["good"]
        assert [r.name for r in list_relations(tmp_path, base_model_id="x#abc")] == ["good"]
    assert f"Relation folder {tmp_path / 'card_list'} is skipped: The card of relation card_list is damaged: it is not a JSON object." in caplog.messages
    assert any("its base_model is not text" in m for m in caplog.messages)
    assert load_relation("good", tmp_path).name == "good"
    with pytest.raises(ReVersionError, match=r"No relation named 'gone' in .* \(known: good\)\."):
        load_relation("gone", tmp_path)
    with pytest.raises(ReVersionError, match="^The card of relation base_list is damaged: its base_model is not text.$"):
        load_relation("base_list", tmp_path)


def test_previews_are_read_only_when_asked(tmp_path, monkeypatch):
    from PIL import Image

    relation = make_relation()
    relation.preview = Image.new("RGB", (8, 4), (255, 0, 0))
    save_relation(relation, tmp_path)
    opened = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or pytest.fail("preview decoded while listing"))
    loaded = list_relations(tmp_path)[0]
    assert loaded.preview is None and opened == []
    monkeypatch.undo()
    assert loaded.read_preview().size == (8, 4)


def test_a_huge_or_corrupt_preview_is_skipped_and_the_relation_still_loads(tmp_path, caplog):
    from PIL import Image

    save_relation(make_relation("bomb"), tmp_path)
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb" / "preview.png")  # 400 megapixels in a small file
    save_relation(make_relation("big"), tmp_path)
    (tmp_path / "big" / "preview.png").write_bytes(b"\0" * (9 * 2**20))
    save_relation(make_relation("wide"), tmp_path)
    Image.new("1", (5000, 1000)).save(tmp_path / "wide" / "preview.png")
    save_relation(make_relation("junk"), tmp_path)
    (tmp_path / "junk" / "preview.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    with caplog.at_level("WARNING", logger="reversion_core"):
        assert [r.read_preview() for r in list_relations(tmp_path)] == [None, None, None, None]
    assert f"Preview {tmp_path / 'bomb' / 'preview.png'} is skipped: it is too large to decode safely." in caplog.messages
    assert f"Preview {tmp_path / 'wide' / 'preview.png'} is skipped: 5000x1000 pixels is too large for a preview." in caplog.messages
    assert f"Preview {tmp_path / 'big' / 'preview.png'} is skipped: the file is larger than 8 MB." in caplog.messages
    assert f"Preview {tmp_path / 'junk' / 'preview.png'} is skipped: it is not a readable image." in caplog.messages


# ----------------------------------------------------------------------------------------------- interrupted saves
def dead_pid():
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_crash_between_the_two_renames_of_an_overwrite_is_recovered_on_listing(tmp_path):
    save_relation(make_relation("above"), tmp_path)
    os.replace(tmp_path / "above", tmp_path / f".above.old-{dead_pid()}")  # the state a kill between the renames leaves
    assert [r.name for r in list_relations(tmp_path)] == ["above"]
    assert sorted(os.listdir(tmp_path)) == ["above"]


def test_a_crash_between_the_two_renames_is_recovered_on_lookup_by_name(tmp_path):
    save_relation(make_relation("above"), tmp_path)
    os.replace(tmp_path / "above", tmp_path / f".above.old-{dead_pid()}")
    assert torch.equal(load_relation("above", tmp_path).vector, make_relation().vector)


def test_a_complete_temporary_folder_of_a_dead_save_becomes_the_relation(tmp_path):
    save_relation(make_relation("above"), tmp_path)
    os.replace(tmp_path / "above", tmp_path / f".above.tmp-{dead_pid()}-abcd1234")  # killed just before the rename
    assert [r.name for r in list_relations(tmp_path)] == ["above"]


def test_leftovers_of_a_dead_save_are_removed_once_the_relation_is_in_place(tmp_path):
    save_relation(make_relation("above"), tmp_path)
    pid = dead_pid()
    (tmp_path / f".above.old-{pid}").mkdir()
    (tmp_path / f".above.tmp-{pid}-abcd1234").mkdir()  # half written: no card
    list_relations(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["above"]


def test_folders_of_a_running_save_are_left_alone(tmp_path):
    save_relation(make_relation("above"), tmp_path)
    os.replace(tmp_path / "above", tmp_path / f".above.old-{os.getpid()}")  # this process may be mid-swap
    assert list_relations(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == [f".above.old-{os.getpid()}"]


def test_clean_leftovers_removes_only_old_temporary_folders_of_that_name(tmp_path):
    import time

    from reversion_core.relation_file import clean_leftovers

    for leftover in (".above.k3j4h2x1", ".above.x.k3j4h2x1", ".below.k3j4h2x1"):
        (tmp_path / leftover).mkdir()
    clean_leftovers(tmp_path, "above", before=time.time() + 1)
    assert sorted(os.listdir(tmp_path)) == [".above.x.k3j4h2x1", ".below.k3j4h2x1"]
    (tmp_path / ".above.k3j4h2x1").mkdir()
    clean_leftovers(tmp_path, "above", before=time.time() - 60)  # newer than the run: another save's
    assert ".above.k3j4h2x1" in os.listdir(tmp_path)


# ----------------------------------------------------------------------------------------------- tokens and formats
def test_automatic1111_embedding_imports(tmp_path):
    vector = torch.randn(1, 32, requires_grad=True)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vector}, "name": "myrel", "step": 500,
                "sd_checkpoint": None, "sd_checkpoint_name": None}, tmp_path / "myrel.pt")
    relation = load_relation(tmp_path / "myrel.pt")
    assert relation.name == "myrel" and relation.token == "<myrel>" and torch.equal(relation.vector, vector[0].detach())


@pytest.mark.parametrize("params", [torch.ones(1, 32), {"*": torch.ones(1, 32), "x": torch.ones(1, 32)}])
def test_automatic1111_embedding_without_one_entry_is_refused(tmp_path, params):
    torch.save({"string_to_param": params, "name": "x"}, tmp_path / "x.pt")
    with pytest.raises(ReVersionError, match=r"^x.pt is an Automatic1111 embedding without exactly one entry in string_to_param\.$"):
        load_relation(tmp_path / "x.pt")


def test_choose_token_keeps_a_safe_token_and_replaces_an_unsafe_one():
    from reversion_core.relation_file import choose_token

    vocab = {"circle</w>", "<|endoftext|>", "a</w>"}
    assert choose_token("<R>", "above", vocab) == "<R>"
    for token in ("circle", "<|endoftext|>", "a b", "<a b>", "plain", None, 5):
        assert choose_token(token, "above", vocab) == "<above>"
    assert choose_token("<R>", "above", vocab, taken={"<R>", "<above>"}) == "<above_2>"
    assert choose_token("<x>", "on top", vocab, taken={"<x>"}) == "<on_top>"
