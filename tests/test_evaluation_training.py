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


# ----------------------------------------------------------------------------------------------- early stop, read back
def curve(*values):
    return [{"step": k + 1, "relation": v} for k, v in enumerate(values)]


def test_the_early_stop_step_is_where_the_engines_rule_first_fires():
    from reversion_core.evaluation.training import stop_step

    assert stop_step(curve(0.5, 0.25, 0.25, 0.25, 1.0)) == 4  # three validations without a gain after step 1
    assert stop_step(curve(0.25, 0.5, 0.25, 0.75, 0.25, 0.25)) is None  # never three in a row
    assert stop_step(curve(0.5, 0.505, 0.5, 0.5)) == 4  # 0.505 is below the margin: no gain
    assert stop_step(curve(0.5, 0.25, 0.25, 0.25), n=0) is None


def early_config(tmp_path, tiny_model_dir, methods):
    return EvaluationConfig(
        relations=["inside"], methods=methods, seeds=[0], templates_per_relation=2, images_per_template=1, train_steps=5,
        inference_steps=2, base_model=str(tiny_model_dir), out_dir=str(tmp_path / "out"), device="cpu",
        train_settings={"gradient_accumulation_steps": 1, "validate_every": 1, "validation_pairs": 2, "validation_steps": 2},
    )


def scripted(monkeypatch, values):
    import reversion_core.validation as validation

    from test_validation import ScriptedReader

    monkeypatch.setattr(validation, "choose_reader", lambda *a, **k: (ScriptedReader(values), ""))


def test_early_keeps_the_best_step_before_the_curve_went_flat(tiny_model_dir, tmp_path, monkeypatch):
    scripted(monkeypatch, (0.5, 0.25, 0.25, 0.25, 1.0))
    evaluate(early_config(tmp_path, tiny_model_dir, ["reversion@early", "reversion@best", "reversion@last"]), progress=False)
    relations = tmp_path / "out" / "relations"
    early, best, last = (load_relation(relations / f"reversion@{k}" / "inside-s0", None) for k in ("early", "best", "last"))
    assert early.card["validation"]["stopped_at"] == 4 and early.card["validation"]["kept_step"] == 1
    assert best.card["validation"]["kept_step"] == 5 and torch.equal(best.vector, last.vector)
    assert not torch.equal(early.vector, best.vector)
    assert early.card["validation"]["why"] == ("A run stopping after 3 validations without a gain of 0.01 would have stopped "
                                                "at step 4 and kept step 1, the best validation up to there (0.50).")


def test_methods_whose_r_is_the_same_vector_share_their_images(tiny_model_dir, tmp_path, monkeypatch):
    import reversion_core.evaluation.batches as batches

    scripted(monkeypatch, (0.25, 0.5, 0.5, 0.5, 0.5))  # flat after step 2: early and best both keep step 2
    calls = []
    original = batches.Sampler.__call__
    monkeypatch.setattr(batches.Sampler, "__call__", lambda self, prompts, seeds: calls.append(len(prompts)) or original(self, prompts, seeds))
    result = evaluate(early_config(tmp_path, tiny_model_dir, ["reversion@best", "reversion@early"]), progress=False)
    assert calls == [2]  # one batch generated; the second method's read back
    best, early = result.records[:2], result.records[2:]
    assert [r["method"] for r in result.records] == ["reversion@best"] * 2 + ["reversion@early"] * 2
    assert [r["image_md5"] for r in best] == [r["image_md5"] for r in early]
    assert all("<reversion@early-inside-s0>" in r["prompt"] for r in early)


def test_a_training_cached_without_early_is_reused_when_early_is_not_asked_for(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    scripted(monkeypatch, (0.5, 0.25))
    config = early_config(tmp_path, tiny_model_dir, ["reversion", "reversion@best"])
    evaluate(config, progress=False)
    shutil.rmtree(tmp_path / "out" / "relations" / "reversion@early")  # as a run from before @early left it
    again = evaluate(config, progress=False)
    assert [t["status"] for t in again.training] == ["cached"]
    config.methods = ["reversion@early"]
    assert [t["status"] for t in evaluate(config, progress=False).training] == ["finished"]
