"""``python -m reversion_core``: train -> generate -> inspect, and one-line errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from reversion_core.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


def test_subcommands_come_from_the_table(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert {"train", "generate", "inspect"} <= set(COMMANDS) and all(name in out for name in COMMANDS)


def test_train_then_generate_then_inspect(exemplar_dir, tiny_model_dir, tmp_path, capsys):
    relations = tmp_path / "relations"
    assert main(["train", str(exemplar_dir), "--name", "rel", "--base-model", str(tiny_model_dir), "--relations-dir",
                 str(relations), "--steps", "2", "--grad-accum", "1", "--device", "cpu"]) == 0
    assert "relation saved to" in capsys.readouterr().out
    assert main(["generate", "--relation", "rel", "--relations-dir", str(relations), "--entities", "circle", "square",
                 "--base-model", str(tiny_model_dir), "--steps", "2", "--num-images", "2", "--out", str(tmp_path / "out"),
                 "--no-progress", "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["circle_R_square-seed0.png", "circle_R_square-seed1.png"]
    capsys.readouterr()
    assert main(["inspect", "rel", "--relations-dir", str(relations), "--base-model", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "token       <R>" in out and "vector      size 32" in out and "nearest     " in out
    assert len(out.split("nearest")[1].split(",")) == 10


@pytest.mark.slow
def test_user_errors_are_one_line_with_exit_status_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "reversion_core", "train", str(tmp_path / "missing")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == f"error: Exemplar folder {tmp_path / 'missing'} does not exist.\n"


def test_inspect_refuses_a_pickle_with_code(tmp_path, capsys):
    import pickle

    with open(tmp_path / "learned_embeds.bin", "wb") as f:
        pickle.dump({"<R>": print}, f)
    assert main(["inspect", str(tmp_path / "learned_embeds.bin"), "--no-neighbours"]) == 2
    assert "contains pickled code, which is never executed" in capsys.readouterr().err


@pytest.mark.parametrize("argv, sentence", [
    (["train", "EX", "--resolution", "-8"], "Setting resolution must be at least 8, not -8."),
    (["train", "EX", "--resolution", "0"], "Setting resolution must be at least 8, not 0."),
    (["train", "EX", "--seed", str(2**64)], "Seed 18446744073709551616 is out of range; use a whole number from 0 to 2**63 - 1."),
    (["train", "EX", "--lambda-steer", "-1"], "Setting lambda_steer must not be negative, not -1."),
    (["train", "EX", "--validation-prompt", "cat box"],
     "The preview prompt 'cat box' has no <R>; write where the relation goes, as in 'circle <R> square'."),
    (["generate", "--prompt", "a <R> b", "--steps", "0"], "The number of denoising steps must be a whole number from 1 to 1000, not 0."),
    (["generate", "--prompt", "a <R> b", "--guidance", "nan"], "The guidance scale must be a finite number of at least 0, not nan."),
    (["generate", "--prompt", "a <R> b", "--seed", str(2**64)],
     "--seed 18446744073709551616 is out of range; use a whole number from 0 to 2**63 - 1."),
    (["generate", "--prompt", "a <R> b", "--out", "FILE"], "--out FILE cannot be used as a folder (it is a file); choose another."),
    (["inspect", "x.bin", "-k", "-1"], "The number of nearest words (-k) must be at least 1, not -1."),
    (["world", "render", "--relation", "above", "--entity-a", "red circle", "--entity-b", "blue square", "--size", "0",
      "--out", "x.png"], "--size must be from 8 to 4096 pixels, not 0."),
])
def test_bad_arguments_get_one_sentence_before_any_model_loads(argv, sentence, exemplar_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("not a folder")
    argv = [str(exemplar_dir) if a == "EX" else str(tmp_path / "FILE") if a == "FILE" else a for a in argv]
    sentence = sentence.replace("FILE", str(tmp_path / "FILE"))
    assert main(argv) == 2
    assert capsys.readouterr().err == f"error: {sentence}\n"


def test_an_automatic1111_embedding_is_inspected(tmp_path, capsys):
    import torch

    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.ones(1, 32)}, "name": "style", "step": 3},
               tmp_path / "style.pt")
    assert main(["inspect", str(tmp_path / "style.pt"), "--no-neighbours"]) == 0
    out = capsys.readouterr().out
    assert "token       <style>" in out and "vector      size 32" in out


def test_a_relation_learned_on_base_model_v1_is_refused_by_the_shipped_model_in_one_sentence(tmp_path, capsys):
    """tests/data/relation-v1/above is the `above` that shipped with base model v1; the embedded model is v2 now."""
    from reversion_core.runtime import DEFAULT_BASE_MODEL

    card = json.loads((DATA / "relation-v1" / "above" / "card.json").read_text())
    assert main(["generate", "--relation", "above", "--relations-dir", str(DATA / "relation-v1"), "--entities", "circle",
                 "square", "--steps", "2", "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Relation 'above' was learned on base model {card['base_model']}, not on the loaded base-model#")
    assert err.endswith("so learn it again on this one.\n") and err.count("\n") == 1
    assert not list(tmp_path.rglob("*.png")) and (DEFAULT_BASE_MODEL / "model_index.json").is_file()
