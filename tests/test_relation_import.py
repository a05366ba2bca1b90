"""Importing relations into the relations folder: bounded zip reading and safe tokens."""
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from reversion_core.errors import ReVersionError
from reversion_core.relation_file import load_relation
from server.forms import GenerationRequest
from reversion_core.relation_zip import MAX_IMPORT_FILE_BYTES, stage_relation_files
from server.studio import Studio


@pytest.fixture
def studio(tiny_model_dir, tmp_path):
    return Studio(tiny_model_dir, relations_dir=tmp_path / "relations", temp_dir=tmp_path / "temp", device="cpu")


def vector_file(path, token="<R>"):
    save_file({token: torch.randn(32)}, str(path))
    return path


def test_a_zip_member_larger_than_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("rel/learned_embeds.safetensors", b"\0" * (MAX_IMPORT_FILE_BYTES + 1))
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: pytest.fail("a member was read"))
    (tmp_path / "work").mkdir()
    with pytest.raises(ReVersionError, match=r"^bomb.zip holds learned_embeds.safetensors of 8 MB; a relation file is at most 8 MB, "
                                             r"a relation zip at most 16 MB unpacked\.$"):
        stage_relation_files([path], tmp_path / "work")


def test_a_zip_whose_members_add_up_past_the_limit_is_refused(tmp_path):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name in ("learned_embeds.safetensors", "card.json", "preview.png"):
            z.writestr(f"rel/{name}", b"\0" * (6 * 2**20))
    (tmp_path / "work").mkdir()
    with pytest.raises(ReVersionError, match=r"^many.zip unpacks to more than 16 MB; a relation file is at most 8 MB"):
        stage_relation_files([path], tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []


def test_a_zip_header_that_understates_a_member_cannot_unpack_more(tmp_path):
    path = tmp_path / "liar.zip"
    big = b"\0" * (MAX_IMPORT_FILE_BYTES * 2)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("learned_embeds.safetensors", big)
    data = bytearray(path.read_bytes())
    for offset, signature in ((0, b"PK\x03\x04"), (data.rfind(b"PK\x01\x02"), b"PK\x01\x02")):
        assert data[offset:offset + 4] == signature
        size_at = offset + (22 if signature == b"PK\x03\x04" else 24)  # uncompressed size field
        data[size_at:size_at + 4] = (1000).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    (tmp_path / "work").mkdir()
    with pytest.raises(ReVersionError, match=r"^liar.zip is not a readable zip of a relation folder\.$"):
        stage_relation_files([path], tmp_path / "work")
    assert sum(f.stat().st_size for f in (tmp_path / "work").iterdir()) <= 1000


def test_a_lone_relation_file_larger_than_the_limit_is_refused(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(b"\0" * (MAX_IMPORT_FILE_BYTES + 2**20))
    with pytest.raises(ReVersionError, match=r"^huge.safetensors is 9 MB; a relation file is at most 8 MB"):
        stage_relation_files([path], tmp_path)


@pytest.mark.parametrize("token", ["<|endoftext|>", "a b", "circle", "<R>"])
def test_an_imported_token_that_is_special_spaced_a_word_or_another_relations_is_replaced(studio, tmp_path, token):
    studio.import_relation([vector_file(tmp_path / "first.safetensors")], "first")  # takes <R>
    assert load_relation("first", studio.relations_dir).token == "<R>"
    studio.import_relation([vector_file(tmp_path / "second.safetensors", token)], "second")
    assert load_relation("second", studio.relations_dir).token == "<second>"


def test_reimporting_over_a_relation_keeps_its_own_token(studio, tmp_path):
    studio.import_relation([vector_file(tmp_path / "rel.safetensors", "<rel-x>")], "rel")
    studio.import_relation([vector_file(tmp_path / "rel.safetensors", "<rel-x>")], "rel", overwrite=True)
    assert load_relation("rel", studio.relations_dir).token == "<rel-x>"


def test_an_automatic1111_embedding_imports_and_generates(studio, tmp_path):
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(1, 32)}, "name": "a1111", "step": 10},
               tmp_path / "a1111.pt")
    assert studio.import_relation([tmp_path / "a1111.pt"]) == "a1111"
    images, prompt, _ = studio.generate(GenerationRequest(relation="a1111", entity_a="circle", entity_b="square", num_images=1, steps=2))
    assert prompt == "circle <a1111> square" and len(images) == 1
