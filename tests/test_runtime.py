"""The runtime choice: one rule for the CLI, the library and the app (base model, device, precision, attention)."""
import pytest
import torch

from reversion_core import runtime
from reversion_core.errors import ReVersionError
from reversion_core.runtime import (
    DEFAULT_BASE_MODEL, SD15_HUB_ID, choose_runtime, pick_dtype, precision_of, resolve_source, torch_dtype,
)


def test_default_is_the_embedded_model_folder():
    assert DEFAULT_BASE_MODEL.parts[-2:] == ("assets", "base-model")


def test_source_is_the_argument_then_the_environment_then_sd15_on_a_gpu_else_the_embedded_model(monkeypatch, tmp_path):
    embedded = tmp_path / "base-model"
    embedded.mkdir()
    monkeypatch.setattr(runtime, "DEFAULT_BASE_MODEL", embedded)
    monkeypatch.delenv("REVERSION_BASE_MODEL", raising=False)
    assert resolve_source(None, "cpu") == SD15_HUB_ID  # the folder holds no model yet
    (embedded / "model_index.json").write_text("{}")
    assert resolve_source(None, "cpu") == str(embedded)
    assert runtime.default_base_model(on_gpu=True) == SD15_HUB_ID
    monkeypatch.setenv("REVERSION_BASE_MODEL", "some/model")
    assert resolve_source(None, "cpu") == "some/model" == runtime.default_base_model(on_gpu=True)
    assert resolve_source(tmp_path / "mine") == str(tmp_path / "mine")


def test_the_cli_and_the_app_pick_the_same_runtime():
    from server.hosting import pick_runtime

    for cuda in (False, True):
        app = pick_runtime({}, cuda_available=cuda, xformers_works=False, gpu_name="GPU")
        assert (app.base_model, app.device, app.precision, app.attention) == tuple(
            vars(choose_runtime(env={}, cuda_available=cuda, xformers_works=False)).values())
    cpu = choose_runtime(env={}, cuda_available=False)
    assert cpu.base_model == resolve_source(None, "cpu") and pick_dtype(torch.device("cpu")) == torch_dtype(cpu.precision)


def test_a_gpu_runs_sd15_in_fp16_and_the_cpu_the_embedded_model_in_fp32():
    gpu = choose_runtime(env={}, cuda_available=True, xformers_works=True)
    assert (gpu.base_model, gpu.device, gpu.precision, gpu.attention) == (SD15_HUB_ID, "cuda", "fp16", "xformers")
    cpu = choose_runtime(env={}, cuda_available=False, xformers_works=lambda: pytest.fail("xformers probed on a CPU"))
    assert (cpu.base_model, cpu.device, cpu.precision, cpu.attention) == (str(DEFAULT_BASE_MODEL), "cpu", "no", "sdpa")


def test_precision_names_map_to_torch_dtypes_and_back():
    assert [torch_dtype(p) for p in ("no", "fp32", "fp16", "bf16")] == [torch.float32, torch.float32, torch.float16, torch.bfloat16]
    assert [precision_of(d) for d in (torch.float32, torch.float16, torch.bfloat16)] == ["no", "fp16", "bf16"]
    with pytest.raises(ReVersionError, match=r"^Precision 'fp8' is unknown; use one of no, fp16, bf16\.$"):
        torch_dtype("fp8")
    with pytest.raises(ReVersionError, match=r"^Half precision \(fp16\) needs a GPU; use 'no' or 'bf16' on CPU\.$"):
        pick_dtype(torch.device("cpu"), "fp16")
