"""The evaluation's learned methods share the base model the process holds: it is loaded once, not once per job,
and a relation learned that way equals one learned by a run that loads the model itself."""
import torch

from reversion_core.evaluation import EvaluationConfig, evaluate
from reversion_core.relation_file import load_relation


def test_every_learn_job_shares_the_one_base_model_generation_loaded(tiny_model_dir, tmp_path, monkeypatch):
    import reversion_core.base_model as base_model
    import reversion_core.generation as generation
    import reversion_core.inversion as inversion

    loads = []
    original = base_model.load_pipeline

    def counted(*args, **kwargs):
        loads.append(args[0] if args else kwargs.get("source"))
        return original(*args, **kwargs)

    for module in (base_model, generation, inversion):
        monkeypatch.setattr(module, "load_pipeline", counted)
    config = EvaluationConfig(
        relations=["inside"], methods=["reversion", "no_steering"], seeds=[0, 1], templates_per_relation=1, images_per_template=1,
        train_steps=2, train_settings={"gradient_accumulation_steps": 1}, inference_steps=2, base_model=str(tiny_model_dir),
        out_dir=str(tmp_path / "out"), device="cpu",
    )
    result = evaluate(config, progress=False)
    assert [t["status"] for t in result.training] == ["finished"] * 4
    assert len(loads) == 1  # four jobs and generation, one load


def test_a_relation_learned_in_the_evaluation_equals_one_learned_alone(tiny_model_dir, tmp_path):
    from reversion_core.benchmarks import load_benchmark
    from reversion_core.evaluation import method_settings
    from reversion_core.inversion import Inversion

    config = EvaluationConfig(
        relations=["inside"], methods=["reversion"], seeds=[0], templates_per_relation=1, images_per_template=1, train_steps=2,
        inference_steps=2, base_model=str(tiny_model_dir), out_dir=str(tmp_path / "out"), device="cpu",
    )
    evaluate(config, progress=False)
    learned = load_relation(tmp_path / "out" / "relations" / "reversion" / "inside-s0", None)
    (relation,) = load_benchmark(config.benchmark_dir, ["inside"])
    alone = list(Inversion(relation.folder, "alone", method_settings(config, "reversion", 0), base_model=str(tiny_model_dir),
                           relations_dir=tmp_path / "alone", device="cpu"))[-1]
    assert torch.equal(learned.vector, alone.relation.vector)
