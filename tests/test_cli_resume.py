"""``train --resume``: the CLI reads the checkpoint once (its settings and its state) and continues the run."""
import torch

from reversion_core.cli import main
from reversion_core.relation_file import load_relation


def test_resume_reads_the_checkpoint_once_and_ends_where_a_straight_run_ends(exemplar_dir, tiny_model_dir, tmp_path, capsys, monkeypatch):
    common = ["--base-model", str(tiny_model_dir), "--grad-accum", "1", "--device", "cpu"]
    assert main(["train", str(exemplar_dir), "--name", "straight", "--relations-dir", str(tmp_path / "a"), "--steps", "4", *common]) == 0
    assert main(["train", str(exemplar_dir), "--name", "split", "--relations-dir", str(tmp_path / "b"), "--steps", "2",
                 "--checkpoint-every", "2", "--checkpoint-dir", str(tmp_path / "ckpt"), *common]) == 0
    reads, load = [], torch.load

    def counted(path, *args, **kwargs):
        reads.append(str(path))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    capsys.readouterr()
    assert main(["train", str(exemplar_dir), "--resume", str(tmp_path / "ckpt"), "--steps", "4", "--overwrite",
                 "--relations-dir", str(tmp_path / "b"), "--checkpoint-dir", str(tmp_path / "ckpt"), *common]) == 0
    assert reads == [str(tmp_path / "ckpt" / "step-000002.pt")]
    assert "Finished at step 4" in capsys.readouterr().out
    assert torch.equal(load_relation(tmp_path / "b" / "split").vector, load_relation(tmp_path / "a" / "straight").vector)
