"""One evaluation from start to end: learn every job, generate and score every batch, gather, aggregate, report."""
from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..benchmarks import load_benchmark
from .aggregate import EvaluationResult, aggregate
from .batches import Sampler, generation_units, run_unit
from .config import EvaluationConfig, Job, method_info, trained_by
from .processes import process_state, progress_bar
from .scorers import make_scorer
from .training import learn, training_base


def evaluate(config: EvaluationConfig, progress: bool = True, log: Callable[[str], None] | None = None) -> EvaluationResult:
    """Learn, generate, score and report; every process returns the same gathered result, the main one writes files."""
    config.validate()
    started, wall = datetime.now(timezone.utc), time.perf_counter()
    state = process_state(config.device)
    main = state.is_main_process
    prefix = f"[process {state.process_index}] " if state.num_processes > 1 else ""
    say = log or (lambda message: print(prefix + message, file=sys.stderr, flush=True))
    relations = load_benchmark(config.benchmark_dir, config.relations, config.templates_per_relation)
    by_name = {r.name: r for r in relations}
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = config.device or (str(state.device) if state.device.type != "cpu" else "cpu")

    sampler = Sampler(config, device)  # loads the base model once per process

    # 1. Learn: each process trains its share of the (method, relation, seed) jobs, alone, on the model it holds;
    # "reversion@best" and "reversion@last" come from the one training of "reversion".
    learned = list(dict.fromkeys(trained_by(m) for m in config.methods if method_info(m).overrides is not None))
    jobs = [Job(m, r.name, int(s)) for m in learned for r in relations for s in config.seeds]
    mine = jobs[state.process_index :: state.num_processes]
    if main:
        say(f"learning {len(jobs)} relation prompts ({config.train_steps} steps each) on {state.num_processes} process(es)")
    source = sampler.generator.source
    base = training_base(config, sampler.generator, device) if mine else None
    training = [learn(job, by_name[job.relation], config, base, source, sampler.base_fingerprint, say, state.process_index) for job in mine]
    del base
    state.wait_for_everyone()

    # 2. Generate and score: batches are cut first, then split, so the records do not depend on the process count.
    scorer = make_scorer(config, relations, device, save_probe=main)
    units = generation_units(config, relations)
    records, samples = [], []
    with state.split_between_processes(units) as my_units:
        bar = progress_bar(len(my_units), progress and main, "batches")
        for unit in my_units:
            recs, samp = run_unit(unit, by_name[unit.job.relation], sampler, scorer, config)
            records += recs
            samples += samp
            bar.update(1)
        bar.close()
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        records, samples, training = gather_object(records), gather_object(samples), gather_object(training)
    training.sort(key=lambda t: jobs.index(Job(**t["job"])))
    names = [r.name for r in relations]
    records.sort(key=lambda r: (config.methods.index(r["method"]), names.index(r["relation"]), r["seed"], r["template_index"], r["image_index"]))

    tables = aggregate(records, scorer.metrics, config.methods, names, [int(s) for s in config.seeds])
    result = EvaluationResult(
        config, records, tuple(scorer.metrics), names, tables, dict(scorer.chance), training, out, time.perf_counter() - wall,
    )
    if main:
        from .report import write_report

        write_report(result, samples, started, state.num_processes, sampler.base_model_id)
    state.wait_for_everyone()
    return result
