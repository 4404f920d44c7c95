"""Batched slider trajectories: several trajectories and sliders per UNet
call, slider-free work shared across shifts, seeded stochastic schedulers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stages.generative.sampling import EvalCounter, GenerationRequest, sample_base
from stages.generative.trajectories import PrefixCache, sample_batch, sample_trajectory
from tests.stages.test_nuisance import make_stage, prompt_batch
from tests.tiny_models import tiny_pipeline_dir, write_random_slider

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCALES = [0.0, 1.0, 2.5]


def request(seed, prompt="a picture of a goldfish", steps=6):
    return GenerationRequest(
        prompt=prompt, negative_prompt="blurry", seed=seed, height=32, width=32, steps=steps, guidance_scale=7.5
    )


@pytest.fixture(scope="module")
def two_sliders(tmp_path_factory):
    from stages.generative.models import load_model
    from stages.generative.sliders import ensure_slider_loaded, read_slider

    folder = tmp_path_factory.mktemp("sliders")
    paths = [write_random_slider(tiny_pipeline_dir(), folder / f"s{k}.safetensors", seed=k + 1) for k in range(2)]
    model = load_model(str(tiny_pipeline_dir()), None, "cpu", "float32")
    return model, [ensure_slider_loaded(model, read_slider(p)) for p in paths], paths


def test_batch_of_trajectories_and_sliders_matches_one_at_a_time(two_sliders):
    model, adapters, _ = two_sliders
    requests = [request(0), request(1, "a picture of a shark"), request(2)]
    owners = [adapters[0], adapters[1], adapters[0]]
    counter = EvalCounter()
    batched = sample_batch(model, requests, owners, SCALES, 750, counter)
    for r, a, got in zip(requests, owners, batched):
        alone = sample_trajectory(model, r, a, SCALES, 750, "plain", EvalCounter())
        assert np.abs(got.astype(int) - alone.astype(int)).max() <= 2
    # 6 DDIM steps: t = 833 (off) then 5 on; calls: prefix 1, scale 0 5, slider rows 5
    assert (counter.unet_calls, counter.unet_samples) == (1 + 5 + 5, 2 * (3 + 3 * 5 + 6 * 5))
    # the second request's slider is not the first's: its scale-2.5 image differs from slider 0's
    other = sample_trajectory(model, requests[1], adapters[0], SCALES, 750, "plain", EvalCounter())
    assert np.abs(other[2].astype(int) - batched[1][2].astype(int)).max() > 10


def test_shared_work_is_reused_by_another_shift_bit_for_bit(two_sliders):
    model, adapters, _ = two_sliders
    requests = [request(5), request(6)]
    cache = PrefixCache()
    first, second, third = EvalCounter(), EvalCounter(), EvalCounter()
    a = sample_batch(model, requests, [adapters[0]] * 2, SCALES, 750, first, cache)
    b = sample_batch(model, requests, [adapters[1]] * 2, SCALES, 750, second, cache)
    fresh = sample_batch(model, requests, [adapters[1]] * 2, SCALES, 750, third, PrefixCache())
    assert len(cache) == 1
    assert second.unet_samples == first.unet_samples - 2 * (2 + 2 * 5)  # no prefix, no scale 0
    assert all(np.array_equal(x, y) for x, y in zip(b, fresh))
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))  # scale 0 is the same in every shift


@pytest.mark.parametrize("name", ["EulerAncestralDiscreteScheduler", "DDPMScheduler"])
def test_stochastic_schedulers_are_seeded_per_trajectory(two_sliders, name):
    import diffusers

    model, adapters, _ = two_sliders
    scheduler = getattr(diffusers, name).from_config(model.scheduler.config)
    stochastic = dataclasses.replace(model, scheduler=scheduler)
    runs = [sample_batch(stochastic, [request(3), request(4)], [adapters[0]] * 2, SCALES, 750, EvalCounter())]
    runs.append(sample_batch(stochastic, [request(3), request(4)], [adapters[0]] * 2, SCALES, 750, EvalCounter()))
    assert all(np.array_equal(x, y) for x, y in zip(*runs))
    plain = sample_trajectory(stochastic, request(3), adapters[0], SCALES, 750, "plain", EvalCounter())
    assert np.abs(plain.astype(int) - runs[0][0].astype(int)).max() <= 2
    base = sample_base(stochastic, request(3), EvalCounter())
    assert np.abs(base[0].astype(int) - runs[0][0][0].astype(int)).max() <= 2
    assert np.abs(runs[0][0][0].astype(int) - runs[0][1][0].astype(int)).max() > 10  # seeds differ


@pytest.mark.slow
def test_stage_output_does_not_depend_on_trajectory_batch_beyond_rounding(two_sliders):
    _, _, paths = two_sliders
    outs = {}
    for size in (1, 4):
        stage = make_stage(paths[0], trajectory_batch=size, scales=SCALES)
        batch = prompt_batch(seeds=(0, 1, 2), classes=("goldfish",))
        outs[size] = stage.apply(batch, stage.variants()[0])
        assert outs[size].status == ["ok"] * 9
    diff = max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(outs[1].images, outs[4].images))
    assert diff <= 2
    assert "trajectory_batch" in make_stage(paths[0]).work_fingerprint()["params"]
