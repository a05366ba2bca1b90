"""InversionSettings and generation arguments: values that cannot work are refused in one sentence."""
import pytest

from reversion_core.errors import ReVersionError
from reversion_core.generation import check_generation
from reversion_core.settings import InversionSettings, check_seed


@pytest.mark.parametrize("changes, sentence", [
    ({"resolution": -8}, "Setting resolution must be at least 8, not -8."),
    ({"resolution": 0}, "Setting resolution must be at least 8, not 0."),
    ({"resolution": 100}, "Setting resolution must be a multiple of 8 from 8 to 2048, not 100."),
    ({"seed": 2**64}, "Seed 18446744073709551616 is out of range; use a whole number from 0 to 2**63 - 1."),
    ({"seed": -1}, "Seed -1 is out of range; use a whole number from 0 to 2**63 - 1."),
    ({"lambda_steer": -0.01}, "Setting lambda_steer must not be negative, not -0.01."),
    ({"learning_rate": float("nan")}, "Setting learning_rate must be a finite number, not nan."),
    ({"learning_rate": 1e9}, "Setting learning_rate must lie in (0, 1], not 1e+09."),
    ({"temperature": float("inf")}, "Setting temperature must be a finite number, not inf."),
    ({"max_train_steps": "10"}, "Setting max_train_steps must be a whole number, not '10'."),
    ({"preview_every": -1}, "Setting preview_every must be at least 0, not -1."),
    ({"adam_beta2": 1.0}, "Setting adam_beta2 must lie in [0, 1), not 1."),
    ({"validation_prompt": "circle square"},
     "The preview prompt 'circle square' has no <R>; write where the relation goes, as in 'circle <R> square'."),
])
def test_settings_that_cannot_work_are_refused_in_one_sentence(changes, sentence):
    with pytest.raises(ReVersionError) as info:
        InversionSettings(**changes)
    assert str(info.value) == sentence


def test_the_paper_defaults_and_a_custom_placeholder_in_the_preview_prompt_are_accepted():
    InversionSettings()
    InversionSettings(placeholder_token="<rel>", validation_prompt="circle <rel> square", resolution=64, seed=2**63 - 1)


@pytest.mark.parametrize("args, sentence", [
    ((0, 7.5), "The number of denoising steps must be a whole number from 1 to 1000, not 0."),
    ((20, float("nan")), "The guidance scale must be a finite number of at least 0, not nan."),
    ((20, -1.0), "The guidance scale must be a finite number of at least 0, not -1.0."),
    ((20, 7.5, -8), "The image height must be a multiple of 8 from 8 to 2048, not -8."),
])
def test_generation_arguments_that_cannot_work_are_refused(args, sentence):
    with pytest.raises(ReVersionError) as info:
        check_generation(*args)
    assert str(info.value) == sentence


def test_seed_of_2_to_the_70_is_refused():
    with pytest.raises(ReVersionError, match=r"^Seed 1180591620717411303424 is out of range; use a whole number from 0 to 2\*\*63 - 1\.$"):
        check_seed(2**70)
