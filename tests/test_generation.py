"""Generation with relation prompts: reproducible images, several relations, prompts."""
import numpy as np
import pytest
import torch

from reversion_core.errors import ReVersionError
from reversion_core.generation import RelationGenerator, build_prompt
from reversion_core.inversion import Inversion
from reversion_core.relation_file import RelationPrompt, save_relation
from reversion_core.settings import InversionSettings

FAST = dict(steps=3, guidance_scale=7.5)


def pixels(images):
    return [np.asarray(image) for image in images]


@pytest.fixture
def generator(tiny_model_dir, tmp_path):
    return RelationGenerator(tiny_model_dir, device="cpu", relations_dir=tmp_path)


def save_random_relation(tmp_path, name, seed, token="<R>"):
    vector = torch.randn(32, generator=torch.Generator().manual_seed(seed)) * 0.02
    return save_relation(RelationPrompt(name, token, vector, {}), tmp_path)


def test_trained_relation_reproduces_the_same_images_in_a_fresh_pipeline(exemplar_dir, tmp_path, tiny_model_dir):
    settings = InversionSettings(max_train_steps=2, gradient_accumulation_steps=1)
    run = Inversion(exemplar_dir, "rel", settings, base_model=tiny_model_dir, relations_dir=tmp_path, device="cpu")
    events = list(run)
    in_training_pipeline = RelationGenerator(pipeline=run.pipe).generate(prompt="circle <R> square", seed=3, **FAST)
    fresh = RelationGenerator(tiny_model_dir, device="cpu", relations_dir=tmp_path)
    first = fresh.generate("rel", "circle", "square", seed=3, **FAST)
    again = fresh.generate("rel", "circle", "square", seed=3, **FAST)
    assert first.prompt == "circle <R> square"
    assert all(np.array_equal(a, b) for a, b in zip(pixels(first.images), pixels(in_training_pipeline.images)))
    assert all(np.array_equal(a, b) for a, b in zip(pixels(first.images), pixels(again.images)))
    assert events[-1].path == tmp_path / "rel"


def test_each_image_is_reproducible_from_its_own_seed(generator, tmp_path):
    save_random_relation(tmp_path, "rel", 0)
    batch = generator.generate("rel", "circle", "square", seeds=[5, 6, 7], **FAST)
    alone = generator.generate("rel", "circle", "square", seed=6, **FAST)
    assert batch.seeds == [5, 6, 7] and len(batch.images) == 3
    assert np.allclose(pixels(batch.images)[1], pixels(alone.images)[0], atol=1)
    assert not np.array_equal(pixels(batch.images)[0], pixels(batch.images)[1])


def test_two_relations_get_their_own_tokens_and_vectors(generator, tmp_path):
    save_random_relation(tmp_path, "above", 1)
    save_random_relation(tmp_path, "inside", 2)
    assert generator.install("above") == "<R>"
    assert generator.install("inside") == "<inside>"  # the card's <R> is taken
    tok, table = generator.pipeline.tokenizer, generator.pipeline.text_encoder.get_input_embeddings().weight
    assert not torch.equal(table[tok.convert_tokens_to_ids("<R>")], table[tok.convert_tokens_to_ids("<inside>")])
    result = generator.generate(["above", "inside"], prompt="circle <R> square <inside> triangle", **FAST)
    assert result.prompt == "circle <R> square <inside> triangle"


def test_reinstalling_after_retraining_uses_the_new_vector(generator, tmp_path):
    save_random_relation(tmp_path, "rel", 1)
    generator.install("rel")
    new = save_relation(RelationPrompt("rel", "<R>", torch.ones(32), {}), tmp_path, overwrite=True)
    generator.install("rel")
    row = generator.pipeline.tokenizer.convert_tokens_to_ids("<R>")
    assert torch.equal(generator.pipeline.text_encoder.get_input_embeddings().weight[row], torch.ones(32)) and new.exists()


def test_suffix_and_negative_prompt(generator, tmp_path):
    save_random_relation(tmp_path, "rel", 0)
    result = generator.generate("rel", prompt="cat {} box", suffix="in a painting", negative_prompt="blurry", **FAST)
    assert result.prompt == "cat <R> box, in a painting" and result.images[0].size == (16, 16)


def test_prompt_without_placeholder_is_refused():
    with pytest.raises(ReVersionError, match="The prompt 'cat box' has no <R>; write where the relation goes"):
        build_prompt("<R>", prompt="cat box")


def test_missing_entity_is_refused():
    with pytest.raises(ReVersionError, match=r"Give both entities \(A and B\) or a prompt containing <R>\."):
        build_prompt("<R>", entity_a="cat", entity_b=" ")


def test_relation_of_the_wrong_size_is_refused(generator, tmp_path):
    save_relation(RelationPrompt("big", "<R>", torch.zeros(768), {}), tmp_path)
    with pytest.raises(ReVersionError, match="has a vector of size 768 but the base model's text encoder uses size 32"):
        generator.generate("big", "a", "b", **FAST)


def test_unknown_relation_name(generator):
    with pytest.raises(ReVersionError, match="No relation named 'nowhere'"):
        generator.generate("nowhere", "a", "b", **FAST)


def test_explicit_token_that_is_a_vocabulary_word_is_refused(generator, tmp_path):
    save_random_relation(tmp_path, "rel", 0)
    with pytest.raises(ReVersionError, match="The token 'circle' is already a word of the base model's vocabulary"):
        generator.install("rel", token="circle")


@pytest.mark.parametrize("token", ["circle", "<|endoftext|>", "<|startoftext|>", "a b", "<a b>", "xyz", ""])
def test_card_token_that_is_unsafe_installs_as_the_relation_name(generator, tmp_path, token):
    save_random_relation(tmp_path, "rel", 0, token=token)
    tokenizer = generator.pipeline.tokenizer
    eos_row = generator.pipeline.text_encoder.get_input_embeddings().weight[tokenizer.eos_token_id].clone()
    before = tokenizer.tokenize("a blue square")
    assert generator.install("rel") == "<rel>"
    assert torch.equal(generator.pipeline.text_encoder.get_input_embeddings().weight[tokenizer.eos_token_id], eos_row)
    assert tokenizer.tokenize("a blue square") == before


def test_relation_named_with_a_space_installs_without_whitespace_in_its_token(generator, tmp_path):
    save_random_relation(tmp_path, "on top", 0, token="on top")
    assert generator.install("on top") == "<on_top>"


def test_a_seed_beyond_64_bits_is_refused_before_generating(generator, tmp_path):
    save_random_relation(tmp_path, "rel", 0)
    with pytest.raises(ReVersionError, match=r"^Seed 1180591620717411303424 is out of range; use a whole number from 0 to 2\*\*63 - 1\.$"):
        generator.generate("rel", "circle", "square", seed=2**70, **FAST)
