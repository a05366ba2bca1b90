"""What the app runs where: hardware choice per simulated environment, public mode, relations apart by base model."""
import pytest
import torch
from spaces.config import Settings  # imported at collection, before any test sets the ZeroGPU switch

from reversion_core.runtime import DEFAULT_BASE_MODEL, SD15_HUB_ID
from reversion_core.errors import ReVersionError
from server.hosting import env_flag, pick_runtime, public_mode
from server.shelves import split_relations
from reversion_core.relation_file import RelationPrompt

ZERO = {"SPACES_ZERO_GPU": "true", "SPACE_ID": "someone/reversion"}


def no_probe():
    raise AssertionError("CUDA must not be probed here")


def test_zero_gpu_runs_sd15_in_fp16_with_sdpa_without_touching_cuda():
    runtime = pick_runtime(ZERO, cuda_available=no_probe, xformers_works=no_probe)
    assert (runtime.hardware, runtime.base_model, runtime.device, runtime.precision, runtime.attention) == (
        "zerogpu", SD15_HUB_ID, "cuda", "fp16", "sdpa")
    assert runtime.description == "SD 1.5 on ZeroGPU (fp16, SDPA)"


def test_cuda_gpu_runs_sd15_with_xformers_when_it_works():
    runtime = pick_runtime({}, cuda_available=True, xformers_works=True, gpu_name="NVIDIA H100 80GB HBM3")
    assert (runtime.hardware, runtime.base_model, runtime.precision, runtime.attention) == ("cuda", SD15_HUB_ID, "fp16", "xformers")
    assert runtime.description == "SD 1.5 on NVIDIA H100 80GB HBM3 (fp16, xformers)"


def test_cuda_gpu_falls_back_to_sdpa_when_xformers_does_not_work():
    assert pick_runtime({}, cuda_available=True, xformers_works=False, gpu_name="GPU").attention == "sdpa"


def test_cpu_runs_the_embedded_model_in_fp32():
    runtime = pick_runtime({}, cuda_available=False, xformers_works=no_probe)
    assert (runtime.hardware, runtime.base_model, runtime.device, runtime.precision, runtime.attention) == (
        "cpu", str(DEFAULT_BASE_MODEL), "cpu", "no", "sdpa")
    assert runtime.description == "Embedded miniature model on CPU (fp32, SDPA)"


def test_base_model_variable_overrides_the_hub_id_on_a_gpu():
    runtime = pick_runtime({**ZERO, "REVERSION_BASE_MODEL": "someone/sd15-finetune"})
    assert runtime.base_model == "someone/sd15-finetune"
    assert runtime.description == "someone/sd15-finetune on ZeroGPU (fp16, SDPA)"


def test_explicit_flags_win_over_the_automatic_choice():
    runtime = pick_runtime(ZERO, device="cpu", cuda_available=False, base_model="/models/x", precision="bf16", public=False)
    assert (runtime.hardware, runtime.device, runtime.base_model, runtime.precision, runtime.public) == (
        "cpu", "cpu", "/models/x", "bf16", False)
    assert pick_runtime({}, cuda_available=True, xformers_works=True, gpu_name="G", attention="sdpa").attention == "sdpa"


def test_impossible_choices_are_refused_in_one_sentence():
    with pytest.raises(ReVersionError, match=r"^Half precision \(fp16\) needs a GPU; use 'no' or 'bf16' on CPU\.$"):
        pick_runtime({}, cuda_available=False, precision="fp16")
    with pytest.raises(ReVersionError, match=r"^Device 'cuda' was asked for but no CUDA GPU is available; use --device cpu\.$"):
        pick_runtime({}, cuda_available=False, device="cuda")
    with pytest.raises(ReVersionError, match=r"^Attention backend 'flash' is unknown; use sdpa or xformers\.$"):
        pick_runtime({}, cuda_available=False, attention="flash")


def test_public_mode_is_on_on_spaces_and_a_flag_elsewhere():
    assert public_mode({}) is False
    assert public_mode({"SPACE_ID": "someone/reversion"}) is True
    assert public_mode({"SPACE_ID": "someone/reversion", "REVERSION_PUBLIC": "0"}) is False
    assert public_mode({"REVERSION_PUBLIC": "1"}) is True


@pytest.mark.parametrize("value", [None, "", "1", "t", "true", "True", "TRUE", "0", "false", "yes", "on"])
def test_zero_gpu_switch_is_read_as_the_spaces_package_reads_it(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    else:
        monkeypatch.setenv("SPACES_ZERO_GPU", value)
        monkeypatch.setenv("SPACES_ZERO_DEVICE_API_URL", "http://127.0.0.1:1")
    assert env_flag(value) is Settings().zero_gpu


def relation(name, base_model):
    return RelationPrompt(name, "<R>", torch.zeros(4), {"base_model": base_model} if base_model else {})


def test_relations_for_another_base_model_are_listed_apart_with_the_reason():
    here = "base-model#dc04a0c316"
    usable, unusable = split_relations(
        [relation("above", "base-model#dc04a0c316"), relation("hugging", f"{SD15_HUB_ID}#5f0e2c1b9a"), relation("bare", None)], here)
    assert [r.name for r in usable] == ["above"]
    assert [(u.relation.name, u.reason) for u in unusable] == [
        ("hugging", "Relation 'hugging' was learned on the SD 1.5 (stable-diffusion-v1-5/stable-diffusion-v1-5#5f0e2c1b9a) "
                    "and this app runs the embedded miniature model (base-model#dc04a0c316); a relation prompt only works "
                    "with the base model it was learned on."),
        ("bare", "Relation 'bare' does not record which base model it was learned on, so it cannot be used with the "
                 "embedded miniature model this app runs; import its file through the app to attach a base model."),
    ]
