"""``python -m reversion_core``: train -> generate -> inspect, and one-line errors."""
import subprocess
import sys
from pathlib import Path

import pytest

from reversion_core.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent


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
