"""Exemplar folders and uploads: what loads and the one sentence for each bad input."""
import json

import pytest
from PIL import Image

from conftest import write_exemplar_folder
from reversion_core.errors import ReVersionError
from reversion_core.exemplars import exemplars_from_uploads, load_exemplars


def test_both_placeholders_are_normalised_to_the_token(exemplar_dir):
    exemplars = load_exemplars(exemplar_dir, placeholder_token="<rel>")
    assert [e.name for e in exemplars.exemplars] == ["1.png", "2.png", "3.jpg"]
    assert exemplars.captions_by_image["1.png"][0] == "red circle <rel> blue square"
    assert exemplars.captions_by_image["2.png"] == ["green triangle <rel> yellow square"]


def test_world_sidecar_files_are_exposed(exemplar_dir):
    (exemplar_dir / "relation.json").write_text(json.dumps({"name": "above", "phrase": "above", "description": "d", "nuisance": []}))
    (exemplar_dir / "templates.json").write_text(json.dumps(["circle <R> square", "square {} circle"]))
    exemplars = load_exemplars(exemplar_dir)
    assert exemplars.name == "above" and exemplars.templates == ["circle <R> square", "square <R> circle"]


def test_huge_image_is_resized_not_rejected(tmp_path):
    folder = write_exemplar_folder(tmp_path / "big", {"1.png": ["a {} b"]})
    Image.new("RGB", (3000, 1500), (1, 2, 3)).save(folder / "1.png")
    assert load_exemplars(folder).exemplars[0].image.size == (1024, 512)


def test_missing_folder(tmp_path):
    with pytest.raises(ReVersionError, match=r"Exemplar folder .*nowhere does not exist\."):
        load_exemplars(tmp_path / "nowhere")


def test_empty_folder(tmp_path):
    with pytest.raises(ReVersionError, match=r"holds no images \(jpg, png or webp\)\."):
        load_exemplars(tmp_path)


def test_no_text_json(exemplar_dir):
    (exemplar_dir / "text.json").unlink()
    with pytest.raises(ReVersionError, match="has no text.json mapping each image to its captions"):
        load_exemplars(exemplar_dir)


def test_image_with_no_captions(exemplar_dir):
    (exemplar_dir / "text.json").write_text(json.dumps({"1.png": ["a {} b"], "2.png": [], "3.jpg": ["c {} d"]}))
    with pytest.raises(ReVersionError, match=r"Image 2.png has no captions in text.json\."):
        load_exemplars(exemplar_dir)


def test_caption_with_no_placeholder(exemplar_dir):
    (exemplar_dir / "text.json").write_text(json.dumps({"1.png": ["a {} b"], "2.png": ["cat box"], "3.jpg": ["c {} d"]}))
    with pytest.raises(ReVersionError, match=r"Caption 'cat box' of image 2.png has no placeholder; write \{\} or <R>"):
        load_exemplars(exemplar_dir)


def test_corrupt_image(exemplar_dir):
    (exemplar_dir / "3.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ReVersionError, match=r"File 3.jpg is not a readable image \(jpg, png or webp\)\."):
        load_exemplars(exemplar_dir)


def test_text_json_that_is_not_json(exemplar_dir):
    (exemplar_dir / "text.json").write_text("{oops")
    with pytest.raises(ReVersionError, match=r"text.json in .* is not valid JSON \(line 1\)\."):
        load_exemplars(exemplar_dir)


def test_text_json_naming_a_missing_file(exemplar_dir):
    (exemplar_dir / "text.json").write_text(json.dumps({"1.png": ["a {} b"], "2.png": ["a {} b"], "3.jpg": ["a {} b"], "9.png": ["x {} y"]}))
    with pytest.raises(ReVersionError, match="lists 9.png, which is not in the folder"):
        load_exemplars(exemplar_dir)


def test_uploads_build_an_exemplar_set(exemplar_dir):
    uploads = [(Image.new("RGB", (20, 20)), ["a {} b"]), (exemplar_dir / "1.png", "red circle <R> blue square\n\n")]
    exemplars = exemplars_from_uploads(uploads)
    assert [e.captions for e in exemplars.exemplars] == [["a <R> b"], ["red circle <R> blue square"]]


def test_upload_of_a_non_image_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ReVersionError, match="File notes.txt is not a readable image"):
        exemplars_from_uploads([(tmp_path / "notes.txt", ["a {} b"])])


def test_no_uploads_is_refused():
    with pytest.raises(ReVersionError, match="No exemplar images were given"):
        exemplars_from_uploads([])


@pytest.mark.parametrize("content", ["5", '"E_A <R> E_B"', '{"a": 1}'])
def test_templates_json_that_is_not_a_list_is_refused(exemplar_dir, content):
    (exemplar_dir / "templates.json").write_text(content)
    with pytest.raises(ReVersionError, match=r'^templates.json in .* must be a list of templates such as "E_A <R> E_B"\.$'):
        load_exemplars(exemplar_dir)


def test_relation_json_that_is_not_an_object_is_refused(exemplar_dir):
    (exemplar_dir / "relation.json").write_text("[1]")
    with pytest.raises(ReVersionError, match=r'^relation.json in .* must be an object such as \{"name": "above"\}\.$'):
        load_exemplars(exemplar_dir)


def test_captions_that_are_not_a_list_are_refused(exemplar_dir):
    (exemplar_dir / "text.json").write_text(json.dumps({"1.png": ["a {} b"], "2.png": 5, "3.jpg": ["c {} d"]}))
    with pytest.raises(ReVersionError, match=r"^text.json in .* must map 2.png to a list of captions, not 5\.$"):
        load_exemplars(exemplar_dir)
