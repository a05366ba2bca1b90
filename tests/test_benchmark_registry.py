"""The benchmark registry: which folders are sets, loading one by name, splitting templates."""
import pytest

from reversion_core.benchmarks import list_benchmark_sets, load_benchmark, load_benchmark_set, split_template, with_articles
from reversion_core.errors import ReVersionError
from conftest import write_exemplar_folder


def test_only_visible_folders_with_a_text_json_are_sets(tmp_path):
    write_exemplar_folder(tmp_path / "above")
    write_exemplar_folder(tmp_path / ".hidden")
    (tmp_path / "no_captions").mkdir()
    assert list_benchmark_sets(tmp_path) == ["above"]
    assert list_benchmark_sets(tmp_path / "missing") == []


def test_a_set_is_loaded_by_name_and_an_unknown_name_is_refused(tmp_path):
    write_exemplar_folder(tmp_path / "above")
    assert load_benchmark_set(tmp_path, "above", max_side=16).exemplars[0].image.size == (16, 16)
    with pytest.raises(ReVersionError, match=r"^The benchmark has no exemplar set named '\.\./above'\.$"):
        load_benchmark_set(tmp_path, "../above")


def test_a_missing_benchmark_folder_is_refused_when_loading_relations(tmp_path):
    with pytest.raises(ReVersionError, match=r"^Benchmark folder .*missing does not exist\.$"):
        load_benchmark(tmp_path / "missing")


def test_templates_split_at_the_placeholder_in_either_spelling():
    assert split_template("red circle <R> blue square") == ("red circle", "blue square")
    assert split_template("cat {} box") == ("cat", "box")
    assert with_articles("orange circle <R> square") == "an orange circle <R> a square"
