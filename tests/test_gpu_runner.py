"""GPU work through `spaces.GPU` functions: durations from the request, the cap, streamed training, shared models."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import spaces
import torch

from reversion_core.base_model import load_pipeline
from reversion_core.errors import ReVersionError
from reversion_core.generation import RelationGenerator
from reversion_core.inversion import FinishedEvent, Inversion, StepEvent, StoppedEvent
from reversion_core.relation_file import RelationPrompt, save_relation
from reversion_core.settings import InversionSettings
from server.forms import GenerationRequest, TrainingRequest
from server.gpu_runner import GpuRunner, NearestWords, StepTimes, TrainingReady, request_stop
from server.hosting import pick_runtime

APP_DIR = Path(__file__).resolve().parent.parent


def fast_settings(**changes):
    return InversionSettings(**{"max_train_steps": 3, "train_batch_size": 2, "gradient_accumulation_steps": 2, **changes})


@pytest.fixture
def relations_dir(tmp_path):
    return tmp_path / "relations"


@pytest.fixture
def runner(tiny_model_dir, relations_dir):
    runtime = pick_runtime({}, cuda_available=False, base_model=str(tiny_model_dir))
    generator = RelationGenerator(runtime.base_model, device=runtime.device, dtype=runtime.precision,
                                  attention=runtime.attention, relations_dir=relations_dir)
    return GpuRunner(generator, runtime, cap_s=None, times=StepTimes())


def training(exemplar_dir, relations_dir, name="rel", **changes):
    from reversion_core.exemplars import load_exemplars

    return TrainingRequest(load_exemplars(exemplar_dir), name, fast_settings(**changes), str(relations_dir))


# ----------------------------------------------------------------------------------------------- the decorator
def test_gpu_functions_pass_through_the_real_spaces_package_off_zero_gpu(runner):
    from spaces.config import Config

    assert Config.zero_gpu is False
    assert runner._generate_gpu == runner._generate_on_gpu
    assert runner._train_gpu == runner._train_on_gpu


def test_each_gpu_function_asks_spaces_for_a_duration_computed_from_its_request(monkeypatch, tiny_model_dir):
    asked = {}

    def gpu(task=None, *, duration=None, size=None):  # records what the app hands the decorator
        def wrap(function):
            asked[function.__name__] = duration
            return function
        return wrap

    monkeypatch.setattr(spaces, "GPU", gpu)
    runtime = pick_runtime({}, cuda_available=False, base_model=str(tiny_model_dir))
    runner = GpuRunner(RelationGenerator(runtime.base_model, device="cpu"), runtime, times=StepTimes(generation=0.1, training=0.15, setup=15))
    generation = GenerationRequest(num_images=3, steps=20)
    train = TrainingRequest(None, "rel", fast_settings(max_train_steps=10), "")
    assert asked["_generate_on_gpu"](generation) == 8  # 3 x 20 x 0.1 s x 1.25 = 7.5
    assert asked["_train_on_gpu"](train) == 27  # (15 + 10 steps x 2 x 2 samples x 0.15 s) x 1.25 = 26.25


def test_generation_runs_through_the_gpu_function_and_measures_its_speed(runner, tiny_model_dir):
    request = GenerationRequest(mode="Free prompt", prompt="circle square", num_images=2, steps=3, seed=5)
    result = runner.generate(request)
    direct = RelationGenerator(tiny_model_dir, device="cpu").generate(prompt="circle square", num_images=2, steps=3, seed=5)
    assert result.seeds == [5, 6]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(result.images, direct.images))
    assert runner.times.measured == {"generation"} and runner.times.generation != StepTimes().generation


# ----------------------------------------------------------------------------------------------- durations and the cap
def test_generation_duration_is_images_times_steps_times_seconds_per_step_with_a_margin(runner):
    runner.times = StepTimes(generation=0.1)
    assert runner.generation_seconds(GenerationRequest(num_images=2, steps=50)) == 13  # 2 x 50 x 0.1 s x 1.25


def test_generation_longer_than_the_cap_is_refused_saying_how_many_steps_fit(runner):
    runner.times, runner.cap_s = StepTimes(generation=0.1), 10
    runner.check_generation(GenerationRequest(num_images=2, steps=40))
    with pytest.raises(ReVersionError, match=(
        r"^2 images of 50 steps need about 13 GPU seconds, more than this app's limit of 10; at most 40 steps fit for "
        r"2 images, so lower the steps or the number of images\.$")):
        runner.generate(GenerationRequest(num_images=2, steps=50))


def test_generation_whose_first_step_does_not_fit_is_refused(runner):
    runner.times, runner.cap_s = StepTimes(generation=10.0), 20
    with pytest.raises(ReVersionError, match=r"^Even one step for 4 images needs more than this app's GPU limit of 20 seconds; ask for fewer images\.$"):
        runner.check_generation(GenerationRequest(num_images=4, steps=1))


def test_training_duration_is_setup_plus_steps_times_samples_times_seconds_per_sample(runner):
    runner.times = StepTimes(training=0.15, setup=15, generation=0.1)
    request = TrainingRequest(None, "rel", fast_settings(max_train_steps=100, gradient_accumulation_steps=4, validate_every=0), "")
    assert runner.training_seconds(request) == 169  # (15 + 100 x 8 x 0.15) x 1.25
    request.settings = fast_settings(max_train_steps=100, gradient_accumulation_steps=4, preview_every=40, preview_images=2,
                                     preview_steps=10, validate_every=0)
    assert runner.training_seconds(request) == 177  # + 3 previews (steps 40, 80, 100) x 2 images x 10 steps x 0.1 s, x 1.25


def test_training_duration_counts_each_validation_as_its_images_times_steps(runner):
    runner.times = StepTimes(training=0.15, setup=15, generation=0.1)
    settings = fast_settings(max_train_steps=100, gradient_accumulation_steps=4, validate_every=40, validation_pairs=8, validation_steps=10)
    assert runner.training_seconds(TrainingRequest(None, "rel", settings, "")) == 199  # + 3 validations (steps 40, 80, 100) x 8 x 10 x 0.1 s
    settings = fast_settings(max_train_steps=30, gradient_accumulation_steps=4, validate_every=40)
    assert runner.training_seconds(TrainingRequest(None, "rel", settings, "")) == 64  # shorter than K steps: none, (15 + 36) x 1.25
    continued = fast_settings(max_train_steps=150, gradient_accumulation_steps=4, validate_every=40, validation_pairs=8, validation_steps=10)
    # from step 50 to 150 it validates at 80, 120 and its last step: (15 + 100 x 8 x 0.15 + 3 x 8 x 10 x 0.1) x 1.25
    assert runner.training_seconds(TrainingRequest(None, "rel", continued, "", start_step=50)) == 199


def test_a_continued_training_asks_only_for_the_steps_it_still_runs(runner):
    runner.times = StepTimes(training=0.15, setup=15, generation=0.1)
    request = TrainingRequest(None, "rel", fast_settings(max_train_steps=150, gradient_accumulation_steps=4, validate_every=0), "",
                              start_step=50)
    assert runner.training_seconds(request) == 169  # the 100 steps from 50 to 150: (15 + 100 x 8 x 0.15) x 1.25


def test_training_longer_than_the_cap_is_refused_saying_how_many_steps_fit(runner):
    runner.times, runner.cap_s = StepTimes(training=0.15, setup=15), 120
    settings = fast_settings(max_train_steps=100, gradient_accumulation_steps=4, validate_every=0)
    assert runner.steps_that_fit(settings, 100) == 67
    with pytest.raises(ReVersionError, match=(
        r"^100 training steps need about 169 GPU seconds, more than this app's limit of 120; at most 67 steps fit, "
        r"so ask for 67 steps or fewer\.$")):
        next(runner.train(TrainingRequest(None, "rel", settings, "")))


def test_training_whose_first_step_does_not_fit_is_refused(runner):
    runner.times, runner.cap_s = StepTimes(training=0.15, setup=100), 120
    with pytest.raises(ReVersionError, match=r"^Even one training step with these settings needs more than this app's GPU limit of 120 seconds"):
        runner.check_training(TrainingRequest(None, "rel", fast_settings(max_train_steps=10, gradient_accumulation_steps=4), ""))


# ----------------------------------------------------------------------------------------------- training
def test_training_streams_the_engine_events_from_inside_the_gpu_function(runner, exemplar_dir, relations_dir):
    items = list(runner.train(training(exemplar_dir, relations_dir)))
    assert isinstance(items[0], TrainingReady) and items[0].total_steps == 3
    assert [i.step for i in items if isinstance(i, StepEvent)] == [1, 2, 3]
    assert isinstance(items[-2], FinishedEvent) and items[-2].path == relations_dir / "rel"
    assert isinstance(items[-1], NearestWords) and len(items[-1].words) == 8
    for item in items:  # on ZeroGPU each one crosses from the worker process pickled
        assert type(pickle.loads(pickle.dumps(item))) is type(item)
    assert {"training", "setup"} <= runner.times.measured


def test_training_on_the_shared_models_learns_what_a_fresh_pipeline_learns(runner, exemplar_dir, relations_dir, tmp_path, tiny_model_dir):
    items = list(runner.train(training(exemplar_dir, relations_dir)))
    fresh = list(Inversion(exemplar_dir, "rel", fast_settings(), base_model=load_pipeline(tiny_model_dir, device="cpu"),
                           relations_dir=tmp_path / "fresh", device="cpu"))
    shared = next(i for i in items if isinstance(i, FinishedEvent))
    assert torch.equal(shared.relation.vector, fresh[-1].relation.vector)
    assert shared.relation.card["base_model"] == fresh[-1].relation.card["base_model"]


def test_training_after_generating_with_a_relation_leaves_generation_as_it_was(runner, exemplar_dir, relations_dir):
    vector = torch.randn(32, generator=torch.Generator().manual_seed(1)) * 0.02
    save_relation(RelationPrompt("other", "<R>", vector, {}), relations_dir)
    request = GenerationRequest(relation="other", entity_a="circle", entity_b="square", num_images=1, steps=3, seed=2)
    before = runner.generate(request, str(relations_dir / "other"))
    tokens = len(runner.generator.pipeline.tokenizer)
    items = list(runner.train(training(exemplar_dir, relations_dir)))  # its placeholder <R> is the installed token too
    after = runner.generate(request, str(relations_dir / "other"))
    assert isinstance(items[-2], FinishedEvent)
    assert len(runner.generator.pipeline.tokenizer) == tokens
    assert np.array_equal(np.asarray(before.images[0]), np.asarray(after.images[0]))


def test_a_stop_file_stops_the_run_after_its_current_step(runner, exemplar_dir, relations_dir, tmp_path):
    request = training(exemplar_dir, relations_dir)
    request.stop_file = str(tmp_path / "stop")
    request_stop(request.stop_file)
    items = list(runner.train(request))
    ends = [i for i in items if isinstance(i, (FinishedEvent, StoppedEvent))]
    assert [(type(e), e.step) for e in ends] == [(StoppedEvent, 1)]
    assert (relations_dir / "rel").is_dir() and not Path(request.stop_file).exists()


def test_the_step_time_estimate_leaves_out_steps_that_included_a_validation():
    from reversion_core.events import ValidationEvent
    from server.gpu_runner import _StepClock

    clock = _StepClock()
    step = lambda n, elapsed: StepEvent(n, 4, 0.0, 0.0, 0.0, 1e-3, elapsed, 0.0)  # noqa: E731
    for item in (TrainingReady(5.0, 4), step(1, 1.0), step(2, 2.0), ValidationEvent(2, {}, [], [], [], None, "world", 30.0),
                 step(3, 33.0), step(4, 34.0)):
        clock.see(item)
    assert clock.seconds_per_step() == 1.0  # steps 2 and 4; step 3's interval held the 30 s validation
    assert clock.setup == 5.0


# ----------------------------------------------------------------------------------------------- ZeroGPU switched on
ZERO_GPU_SCRIPT = r"""
import json, sys
import spaces  # SPACES_ZERO_GPU=true: the package patches torch and wraps decorated functions
import spaces.zero.client as client
from reversion_core.exemplars import load_exemplars
from reversion_core.generation import RelationGenerator
from reversion_core.settings import InversionSettings
from server.forms import GenerationRequest, TrainingRequest
from server.gpu_runner import GpuRunner, StepTimes
from server.hosting import pick_runtime

model, exemplars, relations = sys.argv[1:4]
runtime = pick_runtime(base_model=model)
generator = RelationGenerator(runtime.base_model, device=runtime.device, dtype=runtime.precision, attention=runtime.attention)
runner = GpuRunner(generator, runtime, cap_s=120, times=StepTimes(generation=0.1, training=0.15, setup=15))
asked = []
class Scheduled(Exception):
    pass
def schedule(task_id, request=None, duration=None, gpu_size=None, **kwargs):
    asked.append(duration.total_seconds())
    raise Scheduled  # the real scheduler is a Spaces service; the duration it would get is what is checked
client.schedule = schedule
generation = GenerationRequest(mode="Free prompt", prompt="circle square", num_images=2, steps=30)
train = TrainingRequest(load_exemplars(exemplars), "rel", InversionSettings(max_train_steps=40), relations)
for call in (lambda: runner.generate(generation), lambda: list(runner.train(train))):
    try:
        call()
    except Scheduled:
        pass
print(json.dumps({"hardware": runtime.hardware, "wrapped": runner._generate_gpu != runner._generate_on_gpu
                  and runner._train_gpu != runner._train_on_gpu, "asked": asked,
                  "expected": [runner.generation_seconds(generation), runner.training_seconds(train)]}))
"""


@pytest.mark.cuda
@pytest.mark.skipif(torch.version.cuda is None, reason=(
    "spaces 0.51.3 takes its ZeroGPU path only with a CUDA build of PyTorch: at import it reads torch.version.cuda "
    "(spaces/zero/torch/static.py) and binds torch._C._cuda_init (patching.py); the GPU worker it then forks also "
    "needs the Spaces device API and a real GPU, which no test here has"))
def test_on_zero_gpu_the_functions_are_wrapped_and_ask_for_the_computed_duration(tiny_model_dir, exemplar_dir, tmp_path):
    env = {**os.environ, "SPACES_ZERO_GPU": "true", "SPACES_ZERO_DEVICE_API_URL": "http://127.0.0.1:9",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(APP_DIR), os.environ.get("PYTHONPATH")])), "ZEROGPU_OFFLOAD_DIR": str(tmp_path / "offload")}
    done = subprocess.run([sys.executable, "-c", ZERO_GPU_SCRIPT, str(tiny_model_dir), str(exemplar_dir), str(tmp_path / "r")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["hardware"] == "zerogpu" and report["wrapped"] is True
    # 2 images x 30 steps x 0.1 s x 1.25 -> 8; (15 s + 40 steps x 2 x 4 samples x 0.15 s) x 1.25 -> 79
    assert report["asked"] == report["expected"] == [8, 79]
