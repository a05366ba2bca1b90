"""The inversion loop on a tiny random Stable Diffusion: what changes, what is saved, how runs end."""
import pytest
import torch
from safetensors.torch import load_file

from reversion_core.base_model import base_model_id, embedding_fingerprint, load_pipeline, text_encoder_hash
from reversion_core.errors import ReVersionError
from reversion_core.inversion import (
    CheckpointEvent, FailedEvent, FinishedEvent, Inversion, PreviewEvent, StepEvent, StoppedEvent,
)
from reversion_core.reference_loop import ReferenceInversion, inversion_class
from reversion_core.relation_file import load_relation
from reversion_core.settings import InversionSettings


def settings(**changes):
    return InversionSettings(**{"max_train_steps": 3, "train_batch_size": 2, "gradient_accumulation_steps": 2, **changes})


def run(exemplar_dir, tmp_path, pipeline, **changes):
    return Inversion(exemplar_dir, "rel", settings(**changes), base_model=pipeline, relations_dir=tmp_path / "relations", device="cpu")


def snapshot(pipe):
    return {
        name: {k: v.detach().clone() for k, v in getattr(pipe, name).state_dict().items()}
        for name in ("unet", "vae", "text_encoder")
    }


def test_only_the_placeholder_row_changes_and_every_weight_stays_bit_identical(exemplar_dir, tmp_path, tiny_pipeline):
    before = snapshot(tiny_pipeline)
    inversion = run(exemplar_dir, tmp_path, tiny_pipeline)
    events = list(inversion)
    after = snapshot(tiny_pipeline)
    table_key = next(k for k in before["text_encoder"] if k.endswith("token_embedding.weight"))
    old_table, new_table = before["text_encoder"].pop(table_key), after["text_encoder"].pop(table_key)
    assert new_table.shape[0] == old_table.shape[0] + 1
    assert torch.equal(new_table[:-1], old_table)  # every original row, bit for bit
    assert torch.equal(new_table[inversion.placeholder_id], events[-1].relation.vector)
    assert not torch.equal(events[-1].relation.vector, old_table[inversion.tokenizer.convert_tokens_to_ids("and</w>")])
    for name in before:
        assert before[name].keys() == after[name].keys()
        assert all(torch.equal(before[name][k], after[name][k]) for k in before[name]), name


def test_events_report_each_step_and_the_saved_relation(exemplar_dir, tmp_path, tiny_pipeline, tiny_model_dir):
    events = list(run(exemplar_dir, tmp_path, tiny_pipeline))
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert [e.step for e in steps] == [1, 2, 3] and all(e.total_steps == 3 for e in steps)
    assert all(e.lr == pytest.approx(2.5e-4 * 2 * 2) for e in steps)  # scale_lr: base x batch x accumulation
    assert all(abs(e.loss - (e.denoise_loss + 0.01 * e.steer_loss)) < 1e-5 for e in steps)
    assert steps[-1].eta == 0 and steps[-1].elapsed > 0
    finished = events[-1]
    assert isinstance(finished, FinishedEvent) and finished.path == tmp_path / "relations" / "rel"
    card = load_relation(finished.path).card
    assert card["steps"] == 3 and card["token"] == "<R>" and card["embedding_dim"] == 32
    assert card["exemplar_captions"]["2.png"] == ["green triangle <R> yellow square"]
    assert set(card["final_losses"]) == {"loss", "denoise", "steer"} and card["settings"]["temperature"] == 0.07
    fresh = load_pipeline(tiny_model_dir, device="cpu")  # the id computed apart from the run: folder name and hash
    assert card["base_model"] == base_model_id(fresh, tiny_model_dir) == f"model#{text_encoder_hash(fresh.text_encoder)}.{embedding_fingerprint(fresh.text_encoder)}"
    assert list(load_file(finished.path / "learned_embeds.safetensors")) == ["<R>"]


def test_negatives_are_caption_content_words_and_positives_the_56_prepositions(exemplar_dir, tmp_path, tiny_pipeline):
    inversion = run(exemplar_dir, tmp_path, tiny_pipeline)
    assert inversion.positive_embeds.shape == (56, 32)
    assert {"red", "circle", "blue", "square", "background"} <= set(inversion.negative_words)
    assert not {"a", "on", "the", "<r>"} & set(inversion.negative_words)


def test_random_word_positives_replace_the_prepositions_with_content_words_outside_the_captions(
    exemplar_dir, tmp_path, tiny_pipeline, tiny_model_dir,
):
    from reversion_core.lexicon import BASIS_PREPOSITIONS, FUNCTION_WORDS

    inversion = run(exemplar_dir, tmp_path, tiny_pipeline, steering_positives="random_words")
    words = inversion.positive_words
    assert len(words) == len(set(words)) == inversion.positive_embeds.shape[0] >= 8
    assert not set(words) & (set(BASIS_PREPOSITIONS) | FUNCTION_WORDS | set(inversion.negative_words))
    assert all(w.isalpha() and len(w) > 1 for w in words)
    table = tiny_pipeline.text_encoder.get_input_embeddings().weight.detach()
    first = tiny_pipeline.tokenizer.encode(words[0], add_special_tokens=False)
    assert torch.allclose(inversion.positive_embeds[0], table[first].mean(0))
    finished = list(inversion)[-1]
    card = load_relation(finished.path).card
    assert card["positive_words"] == words and card["settings"]["steering_positives"] == "random_words"
    for k, (changes, expected) in enumerate((({"steering_positives": "random_words"}, words), ({}, list(BASIS_PREPOSITIONS)))):
        fresh = run(exemplar_dir, tmp_path / str(k), str(tiny_model_dir), **changes)  # a model of its own: <R> is new there
        assert fresh.positive_words == expected


def test_unknown_steering_positives_are_refused_in_one_sentence():
    with pytest.raises(ReVersionError, match="Steering positives 'nouns' are unknown"):
        settings(steering_positives="nouns")


def test_learning_rate_scaling_can_be_turned_off(exemplar_dir, tmp_path, tiny_pipeline):
    step = next(iter(run(exemplar_dir, tmp_path, tiny_pipeline, scale_lr=False, max_train_steps=1)))
    assert step.lr == pytest.approx(2.5e-4)


def test_uniform_timesteps_switch(exemplar_dir, tmp_path, tiny_pipeline):
    inversion = run(exemplar_dir, tmp_path, tiny_pipeline, importance_sampling=False)
    assert torch.allclose(inversion.sampler.probabilities, torch.full((1000,), 1e-3, dtype=torch.float64))


def test_previews_show_the_validation_prompt(exemplar_dir, tmp_path, tiny_pipeline):
    events = list(run(exemplar_dir, tmp_path, tiny_pipeline, preview_every=2, preview_images=2, preview_steps=2))
    previews = [e for e in events if isinstance(e, PreviewEvent)]
    assert [p.step for p in previews] == [2, 3] and previews[0].prompt == "circle <R> square"
    assert len(previews[0].images) == 2 and previews[0].images[0].size == (16, 16)
    assert (events[-1].path / "preview.png").is_file()


def test_stop_mid_run_saves_the_latest_vector(exemplar_dir, tmp_path, tiny_pipeline):
    inversion = run(exemplar_dir, tmp_path, tiny_pipeline, max_train_steps=50)
    for event in inversion:
        if isinstance(event, StepEvent) and event.step == 2:
            latest = inversion.current_vector().detach().clone()
            inversion.stop()
    assert isinstance(event, StoppedEvent) and event.step == 2
    saved = load_relation(event.path)
    assert torch.equal(saved.vector, latest) and saved.card["status"] == "stopped" and saved.card["steps"] == 2


def test_resume_from_a_checkpoint_continues_the_same_run(exemplar_dir, tmp_path, tiny_model_dir):
    from reversion_core.base_model import load_pipeline

    straight = Inversion(exemplar_dir, "straight", settings(max_train_steps=4), base_model=tiny_model_dir, relations_dir=tmp_path, device="cpu")
    expected = list(straight)[-1].relation.vector

    first = Inversion(exemplar_dir, "split", settings(max_train_steps=4, checkpoint_every=2), base_model=tiny_model_dir,
                      relations_dir=tmp_path, checkpoint_dir=tmp_path / "ckpt", device="cpu")
    for event in first:
        if isinstance(event, CheckpointEvent):
            first.stop()
    assert isinstance(event, StoppedEvent) and event.step == 2

    resumed = Inversion(exemplar_dir, "split", None, base_model=load_pipeline(tiny_model_dir, device="cpu"),
                        relations_dir=tmp_path, resume_from=tmp_path / "ckpt", overwrite=True, device="cpu")
    events = list(resumed)
    assert [e.step for e in events if isinstance(e, StepEvent)] == [3, 4]
    assert torch.equal(events[-1].relation.vector, expected)


@pytest.mark.parametrize("fuse", ["on", "off"])
def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_vector(exemplar_dir, tmp_path, tiny_pipeline, fuse):
    unet_forward, calls = tiny_pipeline.unet.forward, []
    calls_per_step = 1 if fuse == "on" else 2  # fused: one UNet call for both micro-batches

    def poisoned(*args, **kwargs):
        out = unet_forward(*args, **kwargs)
        calls.append(1)
        if len(calls) > 2 * calls_per_step:  # steps 1-2 are fine, step 3 turns NaN
            out.sample = out.sample * float("nan")
        return out

    tiny_pipeline.unet.forward = poisoned
    inversion = run(exemplar_dir, tmp_path, tiny_pipeline, max_train_steps=5, fuse_micro_batches=fuse)
    for event in inversion:
        if isinstance(event, StepEvent) and event.step == 2:
            good = inversion.current_vector().detach().clone()
    assert isinstance(event, FailedEvent) and event.step == 3
    assert event.message.startswith("Training stopped at step 3 because the loss became NaN or infinite; the <R> from step 2 was kept.")
    saved = load_relation(event.path)
    assert torch.equal(saved.vector, good) and saved.card["status"] == "failed"


def test_v_prediction_models_train(exemplar_dir, tmp_path, tiny_vpred_model_dir):
    inversion = Inversion(exemplar_dir, "v", settings(), base_model=tiny_vpred_model_dir, relations_dir=tmp_path, device="cpu")
    assert inversion.noise_scheduler.config.prediction_type == "v_prediction"
    events = list(inversion)
    assert isinstance(events[-1], FinishedEvent)
    assert all(torch.isfinite(torch.tensor(e.loss)) for e in events if isinstance(e, StepEvent))


def test_fast_loop_matches_the_reference_loop(exemplar_dir, tmp_path, tiny_model_dir):
    fast = list(Inversion(exemplar_dir, "fast", settings(), base_model=tiny_model_dir, relations_dir=tmp_path, device="cpu"))
    reference = ReferenceInversion(exemplar_dir, "ref", settings(reference=True), base_model=tiny_model_dir, relations_dir=tmp_path, device="cpu")
    original = reference.text_encoder.get_input_embeddings().weight.detach().clone()
    ref = list(reference)
    table = reference.text_encoder.get_input_embeddings().weight
    keep = torch.arange(len(table)) != reference.placeholder_id
    assert torch.equal(table[keep], original[keep])  # the other rows were restored after every step
    assert torch.allclose(fast[-1].relation.vector, ref[-1].relation.vector, atol=1e-5)


def test_fused_micro_batches_draw_the_same_samples_and_reach_the_same_vector(exemplar_dir, tmp_path, tiny_model_dir):
    runs = {
        fuse: Inversion(exemplar_dir, fuse, settings(max_train_steps=4, gradient_accumulation_steps=3, fuse_micro_batches=fuse),
                        base_model=tiny_model_dir, relations_dir=tmp_path, device="cpu")
        for fuse in ("on", "off")
    }
    calls = {}
    for fuse, inversion in runs.items():
        forward, calls[fuse] = inversion.unet.forward, []
        inversion.unet.forward = lambda *a, _f=forward, _c=calls[fuse], **k: _c.append(a[0].shape[0]) or _f(*a, **k)
    events = {fuse: list(inversion) for fuse, inversion in runs.items()}
    assert calls["on"] == [6] * 4 and calls["off"] == [2] * 12  # 4 steps of 3 micro-batches of 2
    on, off = ([e for e in events[f] if isinstance(e, StepEvent)] for f in ("on", "off"))
    for a, b in zip(on, off):  # same draws, so the same losses up to float rounding
        assert a.denoise_loss == pytest.approx(b.denoise_loss, rel=1e-4) and a.steer_loss == pytest.approx(b.steer_loss, rel=1e-4)
    assert torch.allclose(events["on"][-1].relation.vector, events["off"][-1].relation.vector, atol=1e-5)


def test_micro_batches_fuse_on_cpu_by_default_and_never_in_the_reference_loop(exemplar_dir, tmp_path, tiny_pipeline):
    assert run(exemplar_dir, tmp_path, tiny_pipeline).fused
    assert not run(exemplar_dir, tmp_path, tiny_pipeline, fuse_micro_batches="off", placeholder_token="<R1>").fused
    reference = ReferenceInversion(exemplar_dir, "rel", settings(reference=True, fuse_micro_batches="on", placeholder_token="<R2>"),
                                   base_model=tiny_pipeline, relations_dir=tmp_path / "relations", device="cpu")
    assert not reference.fused
    with pytest.raises(ReVersionError, match="fuse_micro_batches 'sometimes' is unknown; use one of auto, on, off"):
        settings(fuse_micro_batches="sometimes")


def test_gradient_checkpointing_gives_the_same_result(exemplar_dir, tmp_path, tiny_model_dir):
    plain = list(Inversion(exemplar_dir, "a", settings(max_train_steps=2), base_model=tiny_model_dir, relations_dir=tmp_path, device="cpu"))
    ckpt = list(Inversion(exemplar_dir, "b", settings(max_train_steps=2, gradient_checkpointing=True), base_model=tiny_model_dir,
                          relations_dir=tmp_path, device="cpu"))
    assert torch.allclose(plain[-1].relation.vector, ckpt[-1].relation.vector, rtol=1e-5, atol=1e-5)


def test_placeholder_token_already_in_the_vocabulary_is_refused(exemplar_dir, tmp_path, tiny_pipeline):
    with pytest.raises(ReVersionError, match="The placeholder token 'circle' is already in the base model's vocabulary; choose another token"):
        run(exemplar_dir, tmp_path, tiny_pipeline, placeholder_token="circle")


def test_initializer_of_several_tokens_is_refused(exemplar_dir, tmp_path, tiny_pipeline):
    with pytest.raises(ReVersionError, match="The initializer 'xyzzy' is 5 tokens for this tokenizer; choose a word that is one token"):
        run(exemplar_dir, tmp_path, tiny_pipeline, initializer_token="xyzzy")


def test_existing_relation_folder_is_refused_before_any_step(exemplar_dir, tmp_path, tiny_pipeline):
    (tmp_path / "relations" / "rel").mkdir(parents=True)
    with pytest.raises(ReVersionError, match="already holds a relation; choose another name or allow overwriting"):
        run(exemplar_dir, tmp_path, tiny_pipeline)


def test_fp16_on_cpu_is_refused(exemplar_dir, tmp_path, tiny_pipeline):
    with pytest.raises(ReVersionError, match=r"^Half precision \(fp16\) needs a GPU; use .no. or .bf16. on CPU\.$"):
        run(exemplar_dir, tmp_path, tiny_pipeline, mixed_precision="fp16")


def test_bf16_mixed_precision_trains_on_cpu_and_keeps_the_vector_fp32(exemplar_dir, tmp_path, tiny_pipeline):
    events = list(run(exemplar_dir, tmp_path, tiny_pipeline, mixed_precision="bf16", max_train_steps=2))
    assert isinstance(events[-1], FinishedEvent)
    assert all(torch.isfinite(torch.tensor(e.loss)) for e in events if isinstance(e, StepEvent))
    assert events[-1].relation.vector.dtype == torch.float32


# ----------------------------------------------------------------------------------------------- saved relations stay safe
def existing_relation(tmp_path, name="rel"):
    from reversion_core.relation_file import RelationPrompt, save_relation

    return save_relation(RelationPrompt(name, "<R>", torch.full((32,), 0.5), {"steps": 30, "status": "finished"}), tmp_path / "relations")


def overwriting_run(exemplar_dir, tmp_path, pipeline, **changes):
    return Inversion(exemplar_dir, "rel", settings(**changes), base_model=pipeline, relations_dir=tmp_path / "relations",
                     overwrite=True, device="cpu")


def test_a_stopped_overwrite_run_keeps_the_existing_relation_and_saves_under_a_free_name(exemplar_dir, tmp_path, tiny_pipeline):
    existing_relation(tmp_path)
    inversion = overwriting_run(exemplar_dir, tmp_path, tiny_pipeline, max_train_steps=50)
    inversion.stop()
    event = list(inversion)[-1]
    assert isinstance(event, StoppedEvent) and event.path == tmp_path / "relations" / "rel_2"
    assert event.message == "The existing relation 'rel' was kept; this stopped run was saved as 'rel_2'."
    assert torch.equal(load_relation("rel", tmp_path / "relations").vector, torch.full((32,), 0.5))
    assert load_relation("rel_2", tmp_path / "relations").card["status"] == "stopped"


def test_a_finished_overwrite_run_replaces_the_relation(exemplar_dir, tmp_path, tiny_pipeline):
    existing_relation(tmp_path)
    event = list(overwriting_run(exemplar_dir, tmp_path, tiny_pipeline, max_train_steps=1))[-1]
    assert isinstance(event, FinishedEvent) and event.path == tmp_path / "relations" / "rel" and event.message == ""
    assert load_relation("rel", tmp_path / "relations").card["steps"] == 1


def test_a_vector_too_large_to_encode_fails_the_run_and_keeps_the_existing_relation(exemplar_dir, tmp_path, tiny_pipeline):
    existing_relation(tmp_path)
    inversion = overwriting_run(exemplar_dir, tmp_path, tiny_pipeline, max_train_steps=5)
    step = inversion.optimizer.step

    def blow_up(*args, **kwargs):  # what a learning rate of 1e9 does after a few steps
        step(*args, **kwargs)
        if inversion.optimizer.state and len(calls) >= 1:
            inversion.relation.vector.data.fill_(1e30)  # each number finite, its square not
        calls.append(1)

    calls = []
    inversion.optimizer.step = blow_up
    event = list(inversion)[-1]
    assert isinstance(event, FailedEvent) and event.step == 2
    assert event.message == (
        "Training stopped at step 2 because the <R> vector became NaN or infinite; the <R> from step 1 was kept. "
        "Try a lower learning rate or full precision. The existing relation 'rel' was kept; this failed run was saved as 'rel_2'."
    )
    assert torch.equal(load_relation("rel", tmp_path / "relations").vector, torch.full((32,), 0.5))
    assert torch.isfinite(load_relation("rel_2", tmp_path / "relations").vector.square().sum())


def test_an_unwritable_relations_folder_is_refused_before_any_step(exemplar_dir, tmp_path, tiny_pipeline):
    (tmp_path / "file").write_text("")
    with pytest.raises(ReVersionError, match=r"^Relations folder .*file/relations is not writable \(Not a directory\); choose another folder\.$"):
        Inversion(exemplar_dir, "rel", settings(), base_model=tiny_pipeline, relations_dir=tmp_path / "file" / "relations", device="cpu")


def test_a_name_taken_during_the_run_saves_under_a_free_name_and_says_so(exemplar_dir, tmp_path, tiny_pipeline):
    inversion = run(exemplar_dir, tmp_path, tiny_pipeline)
    for event in inversion:
        if isinstance(event, StepEvent) and event.step == 1:
            existing_relation(tmp_path)  # another run saved "rel" meanwhile
    assert isinstance(event, FinishedEvent) and event.path == tmp_path / "relations" / "rel_2"
    assert event.message == (
        f"The relation could not be saved as '{tmp_path / 'relations' / 'rel'}' (another relation took that name meanwhile); "
        f"it was saved to '{tmp_path / 'relations' / 'rel_2'}' instead."
    )


def test_a_relations_folder_gone_unwritable_during_the_run_saves_to_a_temporary_folder(exemplar_dir, tmp_path, tiny_pipeline):
    import shutil

    inversion = run(exemplar_dir, tmp_path, tiny_pipeline)
    for event in inversion:
        if isinstance(event, StepEvent) and event.step == 1:
            shutil.rmtree(tmp_path / "relations")
            (tmp_path / "relations").write_text("now a file")
    assert isinstance(event, FinishedEvent) and event.path.name == "rel" and event.path.parent.name.startswith("reversion-unsaved-")
    assert event.message.startswith(f"The relation could not be saved as '{tmp_path / 'relations' / 'rel'}' (")
    assert event.message.endswith(f"it was saved to '{event.path}' instead.")
    assert torch.equal(load_relation(event.path).vector, event.relation.vector)
    shutil.rmtree(event.path.parent)


# ----------------------------------------------------------------------------------------------- crashes during the final save
def dead_pid():
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def finished_with_checkpoint(exemplar_dir, tmp_path, model_dir):
    run = Inversion(exemplar_dir, "rel", settings(max_train_steps=2, checkpoint_every=2), base_model=model_dir,
                    relations_dir=tmp_path / "relations", checkpoint_dir=tmp_path / "ckpt", device="cpu")
    return list(run)[-1]


def resume(exemplar_dir, tmp_path, model_dir, overwrite=False):
    return list(Inversion(exemplar_dir, "rel", None, base_model=model_dir, relations_dir=tmp_path / "relations",
                          resume_from=tmp_path / "ckpt", overwrite=overwrite, device="cpu"))


def test_resume_after_a_kill_during_the_final_save_of_a_new_relation_finishes(exemplar_dir, tmp_path, tiny_model_dir):
    import os

    done = finished_with_checkpoint(exemplar_dir, tmp_path, tiny_model_dir)
    half = tmp_path / "relations" / f".rel.tmp-{dead_pid()}-abcd1234"
    os.replace(done.path, half)
    (half / "card.json").unlink()  # killed before the card was written
    events = resume(exemplar_dir, tmp_path, tiny_model_dir)
    assert [type(e) for e in events] == [FinishedEvent] and events[0].path == tmp_path / "relations" / "rel"
    assert torch.equal(load_relation(events[0].path).vector, done.relation.vector)
    assert sorted(os.listdir(tmp_path / "relations")) == ["rel"]


def test_resume_after_a_kill_just_before_the_last_rename_finds_the_relation_saved(exemplar_dir, tmp_path, tiny_model_dir):
    import os

    done = finished_with_checkpoint(exemplar_dir, tmp_path, tiny_model_dir)
    os.replace(done.path, tmp_path / "relations" / f".rel.tmp-{dead_pid()}-abcd1234")
    events = resume(exemplar_dir, tmp_path, tiny_model_dir)
    assert [type(e) for e in events] == [FinishedEvent] and events[0].path == tmp_path / "relations" / "rel"
    assert sorted(os.listdir(tmp_path / "relations")) == ["rel"]


def test_resume_after_a_kill_between_the_renames_of_an_overwrite_finishes(exemplar_dir, tmp_path, tiny_model_dir):
    import os

    done = finished_with_checkpoint(exemplar_dir, tmp_path, tiny_model_dir)
    pid = dead_pid()
    os.replace(done.path, tmp_path / "relations" / f".rel.tmp-{pid}-abcd1234")  # the new one, not yet renamed in
    existing = existing_relation(tmp_path, "old")
    os.replace(existing, tmp_path / "relations" / f".rel.old-{pid}")  # the old one, renamed away
    events = resume(exemplar_dir, tmp_path, tiny_model_dir, overwrite=True)
    assert isinstance(events[-1], FinishedEvent) and events[-1].step == 2
    assert torch.equal(load_relation("rel", tmp_path / "relations").vector, done.relation.vector)
    assert sorted(os.listdir(tmp_path / "relations")) == ["rel"]


def test_leftover_checkpoint_temporaries_older_than_the_run_are_removed(exemplar_dir, tmp_path, tiny_pipeline):
    import os

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / ".ckpt.abc123").write_bytes(b"half a checkpoint")
    os.utime(tmp_path / "ckpt" / ".ckpt.abc123", (1, 1))
    list(Inversion(exemplar_dir, "rel", settings(max_train_steps=1, checkpoint_every=1), base_model=tiny_pipeline,
                   relations_dir=tmp_path / "relations", checkpoint_dir=tmp_path / "ckpt", device="cpu"))
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["step-000001.pt"]


def test_each_loop_refuses_the_other_loops_settings_and_the_settings_pick_the_loop(exemplar_dir, tmp_path, tiny_pipeline):
    with pytest.raises(ReVersionError, match=r"^Settings with reference=True run in the official script's loop"):
        run(exemplar_dir, tmp_path, tiny_pipeline, reference=True)
    with pytest.raises(ReVersionError, match=r"^A ReferenceInversion needs settings with reference=True\.$"):
        ReferenceInversion(exemplar_dir, "rel", settings(), base_model=tiny_pipeline, relations_dir=tmp_path, device="cpu")
    assert (inversion_class(settings(reference=True)), inversion_class(settings())) == (ReferenceInversion, Inversion)
