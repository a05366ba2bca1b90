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
