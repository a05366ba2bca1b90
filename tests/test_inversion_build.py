"""The three ways to build an inversion: from a source, from loaded components (shared), from a checkpoint."""
import pytest
import torch

from reversion_core.errors import ReVersionError
from reversion_core.inversion import CheckpointEvent, Inversion, StepEvent
from reversion_core.run_files import read_checkpoint
from reversion_core.settings import InversionSettings


def settings(**changes):
    return InversionSettings(**{"max_train_steps": 3, "train_batch_size": 2, "gradient_accumulation_steps": 2, **changes})


def weights(pipe):
    return {name: {k: v.detach().clone() for k, v in getattr(pipe, name).state_dict().items()} for name in ("unet", "vae", "text_encoder")}


def test_a_run_on_shared_components_learns_the_same_vector_as_one_that_loads_the_model(exemplar_dir, tmp_path, tiny_model_dir, tiny_pipeline):
    loaded = list(Inversion(exemplar_dir, "a", settings(), base_model=tiny_model_dir, relations_dir=tmp_path, device="cpu"))
    shared = list(Inversion.from_components(exemplar_dir, tiny_pipeline, "b", settings(), relations_dir=tmp_path, device="cpu"))
    assert torch.equal(shared[-1].relation.vector, loaded[-1].relation.vector)
    assert shared[-1].relation.card["base_model"] == loaded[-1].relation.card["base_model"]


def test_shared_components_are_left_untouched_and_shared_not_copied(exemplar_dir, tmp_path, tiny_pipeline):
    before, vocabulary = weights(tiny_pipeline), len(tiny_pipeline.tokenizer)
    run = Inversion.from_components(exemplar_dir, tiny_pipeline, "rel", settings(), relations_dir=tmp_path, device="cpu")
    list(run)
    after = weights(tiny_pipeline)
    assert len(tiny_pipeline.tokenizer) == vocabulary  # the placeholder went into the run's own tokenizer
    for name in before:
        assert all(torch.equal(before[name][k], after[name][k]) for k in before[name]), name
    assert run.unet is tiny_pipeline.unet and run.vae is tiny_pipeline.vae
    assert run.text_encoder is not tiny_pipeline.text_encoder and run.shares_models


def test_two_runs_can_share_one_loaded_model_in_turn(exemplar_dir, tmp_path, tiny_pipeline):
    first = list(Inversion.from_components(exemplar_dir, tiny_pipeline, "one", settings(), relations_dir=tmp_path, device="cpu"))
    second = list(Inversion.from_components(exemplar_dir, tiny_pipeline, "two", settings(), relations_dir=tmp_path, device="cpu"))
    assert torch.equal(first[-1].relation.vector, second[-1].relation.vector)  # same seed, same untouched model


def test_a_pipeline_with_installed_relations_trains_on_a_clean_copy_given_its_pristine_tokenizer(exemplar_dir, tmp_path, tiny_pipeline):
    import copy

    pristine = copy.deepcopy(tiny_pipeline.tokenizer)
    tiny_pipeline.load_textual_inversion({"<R>": torch.ones(32)}, token="<R>")  # what generation does when it installs one
    run = Inversion.from_components(exemplar_dir, tiny_pipeline, "rel", settings(), tokenizer=pristine, relations_dir=tmp_path, device="cpu")
    assert len(run.tokenizer) == len(pristine) + 1
    assert run.text_encoder.get_input_embeddings().weight.shape[0] == len(pristine) + 1


def test_shared_components_in_another_precision_are_refused(exemplar_dir, tmp_path, tiny_pipeline):
    tiny_pipeline.unet.to(torch.bfloat16)
    with pytest.raises(ReVersionError, match="^The loaded base model runs in bfloat16 but this training needs float32; set mixed precision"):
        Inversion.from_components(exemplar_dir, tiny_pipeline, "rel", settings(), relations_dir=tmp_path, device="cpu")


def test_gradient_checkpointing_on_a_shared_unet_is_turned_off_when_the_run_ends(exemplar_dir, tmp_path, tiny_pipeline):
    list(Inversion.from_components(exemplar_dir, tiny_pipeline, "rel", settings(gradient_checkpointing=True), relations_dir=tmp_path, device="cpu"))
    assert not tiny_pipeline.unet.is_gradient_checkpointing and not tiny_pipeline.unet.training


def test_from_checkpoint_takes_a_state_already_read(exemplar_dir, tmp_path, tiny_model_dir):
    straight = list(Inversion(exemplar_dir, "straight", settings(max_train_steps=4), base_model=tiny_model_dir, relations_dir=tmp_path, device="cpu"))
    first = Inversion(exemplar_dir, "split", settings(max_train_steps=4, checkpoint_every=2), base_model=tiny_model_dir,
                      relations_dir=tmp_path, checkpoint_dir=tmp_path / "ckpt", device="cpu")
    for event in first:
        if isinstance(event, CheckpointEvent):
            first.stop()
    state = read_checkpoint(tmp_path / "ckpt")
    resumed = list(Inversion.from_checkpoint(state, exemplar_dir, base_model=tiny_model_dir, relations_dir=tmp_path, overwrite=True, device="cpu"))
    assert [e.step for e in resumed if isinstance(e, StepEvent)] == [3, 4]
    assert resumed[-1].relation.name == "split" and torch.equal(resumed[-1].relation.vector, straight[-1].relation.vector)
