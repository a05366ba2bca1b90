"""One rank of a two-process CPU inversion, launched by tests/test_training_runs.py through torch.distributed.run.

Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 tests/two_process_run.py MODEL_DIR EXEMPLAR_DIR OUT_DIR
Each rank writes its final <R>, how often the loop entered ``no_sync`` and the world size to OUT_DIR/rank-N.pt.
"""
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reversion_core.inversion import FinishedEvent, Inversion  # noqa: E402
from reversion_core.settings import InversionSettings  # noqa: E402

model_dir, exemplar_dir, out = (Path(a) for a in sys.argv[1:4])
torch.set_num_threads(1)
entered = []
no_sync = Accelerator.no_sync


def counting_no_sync(self, model):
    entered.append(type(model).__name__)
    return no_sync(self, model)


Accelerator.no_sync = counting_no_sync
settings = InversionSettings(max_train_steps=2, train_batch_size=1, gradient_accumulation_steps=3, fuse_micro_batches="off")
run = Inversion(exemplar_dir, "two", settings, base_model=model_dir, relations_dir=out / "relations", device="cpu")
events = list(run)
assert isinstance(events[-1], FinishedEvent), events[-1]
rank = run.accelerator.process_index
torch.save({"vector": run.current_vector().detach().cpu(), "no_sync": entered, "world": run.accelerator.num_processes,
            "lr": events[0].lr}, out / f"rank-{rank}.pt")
