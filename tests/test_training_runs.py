"""How inversion runs end, continue and spread over processes: Ctrl-C, gradient-scaler state in checkpoints,
fp16 on a GPU, `train --resume` from the command line, and two processes syncing <R>'s gradient once a step."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reversion_core import inversion as inversion_module
from reversion_core.cli import main
from reversion_core.inversion import CheckpointEvent, FinishedEvent, Inversion, StepEvent, StoppedEvent
from reversion_core.relation_file import load_relation
from reversion_core.settings import InversionSettings

ROOT = Path(__file__).resolve().parent.parent


def settings(**changes):
    return InversionSettings(**{"max_train_steps": 4, "train_batch_size": 1, "gradient_accumulation_steps": 1, **changes})


def final_vector(exemplar_dir, model, relations_dir, **changes) -> torch.Tensor:
    events = list(Inversion(exemplar_dir, "straight", settings(**changes), base_model=model, relations_dir=relations_dir, device="cpu"))
    assert isinstance(events[-1], FinishedEvent)
    return events[-1].relation.vector


# ----------------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_during_a_step_ends_with_stopped_event_and_saves_the_last_finished_step(exemplar_dir, tmp_path, tiny_model_dir, monkeypatch):
    expected = final_vector(exemplar_dir, tiny_model_dir, tmp_path / "straight", max_train_steps=2)
    run = Inversion(exemplar_dir, "interrupted", settings(max_train_steps=10), base_model=tiny_model_dir,
                    relations_dir=tmp_path / "relations", device="cpu")
    losses, calls = run._losses, []

    def interrupted_in_step_3(group):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
        return losses(group)

    monkeypatch.setattr(run, "_losses", interrupted_in_step_3)
    events = list(run)
    assert [e.step for e in events if isinstance(e, StepEvent)] == [1, 2]
    assert isinstance(events[-1], StoppedEvent) and events[-1].step == 2
    saved = load_relation(events[-1].path)
    assert saved.card["status"] == "stopped" and saved.card["steps"] == 2
    assert torch.equal(saved.vector, expected)


# ----------------------------------------------------------------------------------------------- mixed precision
def with_grad_scaler(monkeypatch):
    """Runs get a real GradScaler (on CPU; the scale doubles every step) as accelerate gives fp16 runs on a GPU."""
    make = inversion_module.make_accelerator

    def make_with_scaler(precision, cpu):
        accelerator = make(precision, cpu)
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
        return accelerator

    monkeypatch.setattr(inversion_module, "make_accelerator", make_with_scaler)


def test_gradient_scaler_state_is_checkpointed_and_restored_on_resume(exemplar_dir, tmp_path, tiny_model_dir, monkeypatch):
    with_grad_scaler(monkeypatch)
    straight = Inversion(exemplar_dir, "straight", settings(), base_model=tiny_model_dir, relations_dir=tmp_path, device="cpu")
    expected = list(straight)[-1].relation.vector
    assert straight.accelerator.scaler.get_scale() == 2.0**14  # four steps without overflow

    first = Inversion(exemplar_dir, "split", settings(checkpoint_every=2), base_model=tiny_model_dir, relations_dir=tmp_path,
                      checkpoint_dir=tmp_path / "ckpt", device="cpu")
    for event in first:
        if isinstance(event, CheckpointEvent):
            first.stop()
    state = torch.load(tmp_path / "ckpt" / "step-000002.pt", weights_only=True)
    assert state["scaler"]["scale"] == 2.0**12 and state["scaler"]["_growth_tracker"] == 0

    resumed = Inversion(exemplar_dir, "split", None, base_model=tiny_model_dir, relations_dir=tmp_path,
                        resume_from=tmp_path / "ckpt", overwrite=True, device="cpu")
    assert resumed.accelerator.scaler.get_scale() == 2.0**12
    events = list(resumed)
    assert resumed.accelerator.scaler.get_scale() == 2.0**14
    assert torch.equal(events[-1].relation.vector, expected)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 mixed precision needs a CUDA GPU (it is refused on CPU)")
def test_fp16_run_on_a_gpu_checkpoints_its_scaler_and_resumes_to_the_same_vector(exemplar_dir, tmp_path, tiny_model_dir):
    fp16 = settings(mixed_precision="fp16")
    straight = Inversion(exemplar_dir, "straight", fp16, base_model=tiny_model_dir, relations_dir=tmp_path, device="cuda")
    expected = list(straight)[-1].relation.vector
    assert expected.dtype == torch.float32 and straight.unet.dtype == torch.float16
    first = Inversion(exemplar_dir, "split", settings(mixed_precision="fp16", checkpoint_every=2), base_model=tiny_model_dir,
                      relations_dir=tmp_path, checkpoint_dir=tmp_path / "ckpt", device="cuda")
    for event in first:
        if isinstance(event, CheckpointEvent):
            first.stop()
    state = torch.load(tmp_path / "ckpt" / "step-000002.pt", weights_only=True)
    assert state["scaler"] is not None and state["scaler"]["scale"] > 0
    resumed = Inversion(exemplar_dir, "split", None, base_model=tiny_model_dir, relations_dir=tmp_path,
                        resume_from=tmp_path / "ckpt", overwrite=True, device="cuda")
    assert resumed.accelerator.scaler.get_scale() == state["scaler"]["scale"]
    assert torch.equal(list(resumed)[-1].relation.vector, expected)


# ----------------------------------------------------------------------------------------------- train --resume

def test_cli_resume_needs_only_the_checkpoint_and_reaches_the_vector_of_one_run(exemplar_dir, tiny_model_dir, tmp_path, capsys):
    expected = final_vector(exemplar_dir, tiny_model_dir, tmp_path / "straight")
    common = ["--base-model", str(tiny_model_dir), "--relations-dir", str(tmp_path / "relations"), "--batch-size", "1",
              "--grad-accum", "1", "--device", "cpu"]
    assert main(["train", str(exemplar_dir), "--name", "rel", "--steps", "2", "--checkpoint-every", "2", *common]) == 0
    assert (tmp_path / "runs" / "rel" / "exemplars" / "text.json").is_file()
    assert main(["train", "--resume", str(tmp_path / "runs" / "rel"), "--steps", "4", "--overwrite", *common]) == 0
    assert "Finished at step 4" in capsys.readouterr().out
    assert torch.equal(load_relation("rel", tmp_path / "relations").vector, expected)


def test_cli_resume_from_a_checkpoint_without_kept_exemplars_asks_for_the_folder(tmp_path, capsys):
    (tmp_path / "old").mkdir()
    assert main(["train", "--resume", str(tmp_path / "old" / "step-000002.pt")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {tmp_path / 'old' / 'exemplars'} does not exist (checkpoints written before exemplars were kept "
                   "beside them); give the exemplar folder to learn from.\n")


# ----------------------------------------------------------------------------------------------- two processes
@pytest.mark.slow
def test_two_cpu_processes_sync_the_gradient_once_a_step_and_keep_one_vector(exemplar_dir, tiny_model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(ROOT / "tests" / "two_process_run.py"), str(tiny_model_dir), str(exemplar_dir), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank-{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # 3 micro-batches a step, 2 steps: the first two of each step accumulate locally, the third all-reduces
    assert [len(r["no_sync"]) for r in ranks] == [4, 4]
    assert ranks[0]["lr"] == pytest.approx(2.5e-4 * 1 * 3 * 2)  # scaled by batch x accumulation x processes
    assert torch.equal(ranks[0]["vector"], ranks[1]["vector"])  # each rank drew other samples, yet one <R>
    assert load_relation(tmp_path / "relations" / "two").card["steps"] == 2


def test_the_cli_the_app_and_each_visitor_keep_run_folders_in_runs_beside_their_relations(tmp_path):
    from reversion_core.run_files import runs_dir
    from server.shelves import VisitorShelf
    from server.studio import Studio
    from server.workspaces import Workspaces

    assert runs_dir(tmp_path / "relations") == tmp_path / "runs"
    studio = Studio(relations_dir=tmp_path / "relations", temp_dir=tmp_path / "tmp")
    assert studio.shared.runs_dir == tmp_path / "runs"
    visitor = VisitorShelf(Workspaces(tmp_path / "relations", tmp_path / "data").for_visitor("alice"))
    assert visitor.runs_dir == runs_dir(visitor.relations_dir)
