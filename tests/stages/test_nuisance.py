"""Nuisance stage on a tiny random Stable-Diffusion-shaped model (CPU, 32 px)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.sources.prompts import PromptsSource, PromptsSpec
from stages.base import Batch
from stages.generative.spec import scale_tag
from stages.nuisance import NuisanceParams, NuisanceStage
from tests.tiny_models import tiny_pipeline_dir, write_random_slider

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCALES = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


@pytest.fixture(scope="module")
def slider(tmp_path_factory):
    return write_random_slider(
        tiny_pipeline_dir(), tmp_path_factory.mktemp("sliders") / "goldfish-snow.safetensors"
    )


def make_stage(slider, **overrides) -> NuisanceStage:
    params = {
        "stage": "nuisance",
        "model": str(tiny_pipeline_dir()),
        "device": "cpu",
        "steps": 4,
        "sliders": [{"shift": "heavy snow", "path": str(slider), "class_name": "goldfish"}],
        **overrides,
    }
    return NuisanceStage(NuisanceParams(**params))


def prompt_batch(seeds=(0,), classes=("goldfish",)) -> Batch:
    source = PromptsSource(PromptsSpec(kind="prompts", classes=list(classes), seeds=list(seeds)))
    items = list(source.index())
    return Batch(
        keys=[it.key for it in items],
        images=[None] * len(items),
        seeds=[1000 + i for i in range(len(items))],
        labels=[it.label for it in items],
        meta=[source.load(it).meta for it in items],
    )


def request_for(model, seed=0, steps=4):
    from stages.generative.sampling import GenerationRequest

    return GenerationRequest(
        prompt="a picture of a goldfish",
        negative_prompt="blurry",
        seed=seed,
        height=32,
        width=32,
        steps=steps,
        guidance_scale=7.5,
    )


@pytest.fixture(scope="module")
def loaded(slider):
    from stages.generative.models import load_model
    from stages.generative.sliders import ensure_slider_loaded, read_slider

    model = load_model(str(tiny_pipeline_dir()), None, "cpu", "float32")
    return model, ensure_slider_loaded(model, read_slider(slider))


def test_branched_equals_plain_loop_with_fewer_unet_evaluations(loaded):
    from stages.generative.sampling import EvalCounter
    from stages.generative.trajectories import sample_trajectory

    model, adapter = loaded
    counts = {}
    images = {}
    for sampler in ("branched", "plain"):
        counts[sampler] = EvalCounter()
        images[sampler] = sample_trajectory(
            model, request_for(model, steps=8), adapter, SCALES, 750, sampler, counts[sampler]
        )
    # 8 DDIM steps: t = 876, 751 (slider off, shared) then 626 ... 1 (6 steps x 6 scales), CFG doubles;
    # scale 0 (the base model) and the 5 slider scales are one UNet call each per step
    assert counts["plain"].unet_samples == 8 * 6 * 2
    assert counts["branched"].unet_samples == 2 * 2 + 6 * 6 * 2
    assert counts["branched"].unet_calls == 2 + 6 * 2 and counts["plain"].unet_calls == 48
    diff = np.abs(images["branched"].astype(int) - images["plain"].astype(int))
    assert images["branched"].shape == (6, 32, 32, 3)
    assert diff.max() <= 2 and diff.mean() < 0.05


def test_scale_zero_is_the_base_model_and_distance_grows_with_scale(loaded):
    from stages.generative.sampling import EvalCounter, sample_base, sample_plain
    from stages.generative.trajectories import sample_trajectory

    model, adapter = loaded
    base = sample_base(model, request_for(model), EvalCounter())
    plain_zero = sample_plain(model, request_for(model), adapter, 0.0, 750, EvalCounter())
    assert np.array_equal(plain_zero, base)
    trajectory = sample_trajectory(model, request_for(model), adapter, SCALES, 750, "branched", EvalCounter())
    assert np.abs(trajectory[0].astype(int) - base[0].astype(int)).max() <= 1
    distances = [np.abs(im.astype(float) - trajectory[0]).mean() for im in trajectory]
    assert distances[0] == 0.0
    assert all(a < b for a, b in zip(distances, distances[1:])), distances
    assert distances[-1] > 5.0


def test_slider_on_only_after_start_noise(loaded):
    """start_noise below every timestep: the slider never switches on, all scales equal the base."""
    from stages.generative.sampling import EvalCounter, sample_base
    from stages.generative.trajectories import sample_trajectory

    model, adapter = loaded
    counter = EvalCounter()
    trajectory = sample_trajectory(model, request_for(model), adapter, SCALES, 0, "branched", counter)
    assert counter.unet_samples == 4 * 2
    base = sample_base(model, request_for(model), EvalCounter())
    assert all(np.array_equal(im, base[0]) for im in trajectory)


def test_apply_returns_trajectories_with_provenance(slider):
    stage = make_stage(slider)
    variant = stage.variants()[0]
    assert variant.config == "heavy_snow" and stage.outputs_per_input(variant) == 6
    batch = prompt_batch(seeds=(3, 4))
    out = stage.apply(batch, variant)
    assert len(out) == 12 and out.status == ["ok"] * 12
    assert out.keys[:6] == [f"000_goldfish-seed0003-{scale_tag(s)}" for s in SCALES]
    assert out.keys[1] == "000_goldfish-seed0003-s0p5"
    assert out.source_keys == ["000_goldfish-seed0003"] * 6 + ["000_goldfish-seed0004"] * 6
    assert {s["trajectory"] for s in out.shift[:6]} == {"heavy_snow-000_goldfish-seed0003"}
    assert [s["scale"] for s in out.shift[6:]] == SCALES
    first = out.shift[0]
    assert (first["class_name"], first["shift_name"], first["noise_seed"]) == ("goldfish", "heavy snow", 3)
    assert len(first["slider_sha256"]) == 64
    assert out.seeds[:6] == [1000] * 6 and out.labels == [0] * 12
    assert all(im.shape == (32, 32, 3) and im.dtype == np.uint8 for im in out.images)
    # different seeds give different trajectories; the same batch gives the same pixels, and a
    # trajectory rendered alone differs from it in a batch by rounding only
    assert not np.array_equal(out.images[0], out.images[6])
    again = stage.apply(prompt_batch(seeds=(3, 4)), variant)
    assert all(np.array_equal(a, b) for a, b in zip(again.images, out.images))
    alone = stage.apply(prompt_batch(seeds=(3,)), variant)
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(alone.images, out.images[:6])) <= 2
    json.dumps(out.shift)


def test_missing_slider_for_class_becomes_error_rows(slider):
    stage = make_stage(slider)
    out = stage.apply(prompt_batch(classes=("goldfish", "tabby cat")), stage.variants()[0])
    assert out.status == ["ok"] * 6 + ["error"] * 6
    assert "no slider for class 'tabby cat'" in out.reason[6]
    assert all(im is None for im in out.images[6:])


def test_image_to_image_keeps_source_size(slider):
    stage = make_stage(
        slider,
        mode="image2image",
        strength=0.5,
        scales=[0.0, 2.0],
        sliders=[{"shift": "heavy snow", "path": str(slider)}],
    )
    assert stage.needs_image
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    out = stage.apply(Batch(keys=["img"], images=[image], seeds=[5], labels=[2]), stage.variants()[0])
    assert out.status == ["ok", "ok"] and out.keys == ["img-s0p0", "img-s2p0"]
    assert out.images[0].shape == (40, 56, 3)
    assert out.shift[0]["noise_seed"] == 5 and out.shift[0]["class_name"] == "2"
    assert not np.array_equal(out.images[0], out.images[1])


def test_output_size_resizes(slider):
    out = make_stage(slider, output_size=16, scales=[1.0]).apply(
        prompt_batch(), make_stage(slider).variants()[0]
    )
    assert out.images[0].shape == (16, 16, 3)


def test_weight_hashes_cover_model_and_slider(slider):
    hashes = make_stage(slider).weight_hashes()
    assert any(k.endswith("unet/diffusion_pytorch_model.safetensors") for k in hashes)
    assert any(k.endswith("text_encoder/model.safetensors") for k in hashes)
    assert (
        hashes["slider/heavy_snow/goldfish/goldfish-snow.safetensors"]
        == json.loads(slider.with_suffix(".json").read_text())["adapter_sha256"]
    )
    assert all(len(v) == 64 for v in hashes.values())


def test_slider_for_another_base_model_is_refused(slider, tmp_path):
    other = tmp_path / "other.safetensors"
    other.write_bytes(slider.read_bytes())
    meta = json.loads(slider.with_suffix(".json").read_text())
    meta["base_model"]["unet_sha256"] = "0" * 64
    other.with_suffix(".json").write_text(json.dumps(meta))
    stage = make_stage(other)
    with pytest.raises(ValueError, match=r"nuisance.sliders\[0\].path: .*trained on a base model"):
        stage.weight_hashes()


def test_missing_model_names_the_field(slider, tmp_path):
    with pytest.raises(ValueError, match=r"nuisance.model: .*not a local folder"):
        make_stage(slider, model=str(tmp_path / "nope")).weight_hashes()


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"scales": []}, "scales"),
        ({"scales": [0.0, float("inf")]}, "scales"),
        ({"scales": [0.5, 0.5]}, "scales"),
        ({"prompt": "a {thing}"}, "prompt"),
        ({"class_prompts": {"cat": "cat"}}, "class_prompts"),
        ({"start_noise": 2000}, "start_noise"),
    ],
)
def test_bad_params_fail_validation(slider, bad, field):
    with pytest.raises(ValidationError) as err:
        make_stage(slider, **bad)
    assert field in str(err.value)


def test_resources_follow_the_device(slider):
    assert make_stage(slider).resources == {}
    assert make_stage(slider, device="cuda").resources == {"GPU": 1}


def test_prompts_source_items():
    source = PromptsSource(
        PromptsSpec(kind="prompts", classes=["goldfish", "great white shark"], seeds_per_class=2)
    )
    items = list(source.index())
    assert [it.key for it in items] == [
        "000_goldfish-seed0000",
        "000_goldfish-seed0001",
        "001_great_white_shark-seed0000",
        "001_great_white_shark-seed0001",
    ]
    assert [it.label for it in items] == [0, 0, 1, 1]
    loaded = source.load(items[3])
    assert loaded.image is None and loaded.meta == {
        "class_name": "great white shark",
        "class_index": 1,
        "seed": 1,
    }
    assert len({it.sha256 for it in items}) == 4
    with pytest.raises(ValidationError, match="exactly one of"):
        PromptsSpec(kind="prompts", classes=["a"])


def test_build_release_end_to_end(slider, tmp_path):
    """prompts source -> nuisance -> shards: complete trajectories, provenance with weight hashes."""
    import pyarrow.parquet as pq
    import webdataset as wds

    from pipeline.core.build import build_release
    from pipeline.core.manifest import parse_release

    release = parse_release(
        {
            "name": "cns-tiny",
            "version": "0.0.1",
            "seed": 3,
            "source": {"kind": "prompts", "classes": ["goldfish"], "seeds": [0, 1]},
            "shifts": [
                {
                    "stage": "nuisance",
                    "model": str(tiny_pipeline_dir()),
                    "device": "cpu",
                    "steps": 2,
                    "scales": [0.0, 1.0, 2.0],
                    "sliders": [{"shift": "heavy snow", "path": str(slider), "class_name": "goldfish"}],
                }
            ],
            "output": {"samples_per_shard": 2},
        }
    )
    result = build_release(release, tmp_path, workers=1)
    assert result.counts == {"total": 6, "ok": 6, "rejected": 0, "error": 0}
    rows = pq.read_table(tmp_path / "samples.parquet").to_pylist()
    shifts = [json.loads(r["shift"]) for r in rows]
    assert sorted((s["trajectory"], s["scale"]) for s in shifts) == [
        (f"heavy_snow-000_goldfish-seed000{k}", s) for k in (0, 1) for s in (0.0, 1.0, 2.0)
    ]
    assert {s["shift_name"] for s in shifts} == {"heavy snow"} and {r["config"] for r in rows} == {
        "heavy_snow"
    }
    samples = list(
        wds.WebDataset(
            sorted(str(p) for p in (tmp_path / "data").glob("*/*.tar")), shardshuffle=False
        ).decode("rgb8")
    )
    assert sorted(s["__key__"] for s in samples) == sorted(r["key"] for r in rows)
    assert all(s["png"].shape == (32, 32, 3) and s["cls"] == 0 for s in samples)
    prov = json.loads((tmp_path / "provenance.json").read_text())
    weights = prov["stages"][0]["weights"]
    assert any(k.startswith("slider/heavy_snow/goldfish/") for k in weights)
    # preview: rows are the trajectories, columns the scales of the shift
    from PIL import Image

    from pipeline.views.preview import contact_sheet

    sheet = np.asarray(Image.open(contact_sheet(tmp_path, tmp_path / "p.png", rows=6, tile=32)))
    assert sheet.shape == (46 + 2 * 36, 150 + 3 * 36, 3)
    by_key = {s["__key__"]: s["png"] for s in samples}
    for r, seed in enumerate((0, 1)):
        for c, tag in enumerate(("s0p0", "s1p0", "s2p0")):
            tile = sheet[46 + r * 36 : 46 + r * 36 + 32, 150 + c * 36 : 150 + c * 36 + 32]
            assert np.array_equal(tile, by_key[f"000_goldfish-seed000{seed}-{tag}"])
    # the shifts layout: one row for the shift, columns clean (a prompt has no source image) then the
    # scales, for the first trajectory
    from pipeline.views.preview_shifts import FONT_SIZE, HEADER_H, LABEL_W, label_font, marker_tile

    sheet = np.asarray(Image.open(contact_sheet(tmp_path, tmp_path / "s.png", tile=32, layout="shifts")))
    assert sheet.shape == (HEADER_H + 36, LABEL_W + 4 * 36, 3)
    clean = sheet[HEADER_H : HEADER_H + 32, LABEL_W : LABEL_W + 32]
    assert np.array_equal(clean, np.asarray(marker_tile("prompt", 32, label_font(FONT_SIZE))))  # not "no source"
    for c, tag in enumerate(("s0p0", "s1p0", "s2p0"), start=1):
        tile = sheet[HEADER_H : HEADER_H + 32, LABEL_W + c * 36 : LABEL_W + c * 36 + 32]
        assert np.array_equal(tile, by_key[f"000_goldfish-seed0000-{tag}"])


def test_every_model_file_is_fingerprinted(slider, tmp_path):
    import shutil

    model = shutil.copytree(tiny_pipeline_dir(), tmp_path / "m")
    before = make_stage(slider, model=str(model)).weight_hashes()
    assert {k.removeprefix(f"{model}/") for k in before} >= {
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/tokenizer_config.json",
        "unet/config.json",
        "text_encoder/config.json",
    }
    config = model / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace('"leading"', '"trailing"'))
    after = make_stage(slider, model=str(model)).weight_hashes()
    changed = {k.removeprefix(f"{model}/") for k in before if before[k] != after[k]}
    assert changed == {"scheduler/scheduler_config.json"}


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: __import__("shutil").rmtree(m / "vae"), "names vae but .* has no such folder"),
        (
            lambda m: (m / "model_index.json").write_text(
                json.dumps({k: v for k, v in json.loads((m / "model_index.json").read_text()).items() if k != "vae"})
            ),
            "model_index.json has no entry for vae",
        ),
    ],
)
def test_incomplete_model_folder_fails_at_planning(slider, tmp_path, damage, message):
    import shutil

    model = shutil.copytree(tiny_pipeline_dir(), tmp_path / "m")
    damage(model)
    with pytest.raises(ValueError, match=r"nuisance.model: model .*" + message):
        make_stage(slider, model=str(model)).weight_hashes()


def test_cuda_is_checked_on_the_workers_not_the_driver():
    from stages.generative.spec import check_cuda_workers, cuda_visible

    assert cuda_visible() is __import__("torch").cuda.is_available()
    with pytest.raises(ValueError, match="nuisance.device: device cuda, but none of the cluster's 2 workers"):
        check_cuda_workers("cuda", {"tcp://a": False, "tcp://b": False}, "nuisance.device")
    check_cuda_workers("cuda", {"tcp://a": False, "tcp://b": True}, "nuisance.device")
    check_cuda_workers("auto", {"tcp://a": False}, "nuisance.device")


@pytest.mark.slow
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_stage_without_a_cuda_worker_is_bad_input_before_any_work(slider, tmp_path):
    from pipeline.core.build import build_release
    from pipeline.core.manifest import ManifestError, parse_release

    release = parse_release({
        "name": "cns-cuda", "version": "0.0.1",
        "source": {"kind": "prompts", "classes": ["goldfish"], "seeds": [0]},
        "shifts": [{"stage": "nuisance", "model": str(tiny_pipeline_dir()), "device": "cuda",
                    "sliders": [{"shift": "heavy snow", "path": str(slider), "class_name": "goldfish"}]}],
    })
    with pytest.raises(ManifestError, match=r"shifts.0.device: device cuda, but none of the cluster's 1 workers"):
        build_release(release, tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()


def test_slider_class_missing_from_the_source_is_bad_input_at_planning(slider):
    from pipeline.core.manifest import ManifestError, parse_release
    from pipeline.core.plan import plan_release

    def release(classes):
        return parse_release({
            "name": "cns-classes", "version": "0.0.1",
            "source": {"kind": "prompts", "classes": classes, "seeds": [0]},
            "shifts": [{"stage": "nuisance", "model": str(tiny_pipeline_dir()), "device": "cpu",
                        "sliders": [{"shift": "heavy snow", "path": str(slider), "class_name": "goldfish"}]}],
        })

    with pytest.raises(ManifestError, match=r"shifts.0 \(nuisance\): sliders\[0\].class_name 'goldfish' is not"):
        plan_release(release(["tabby cat"]))
    assert len(plan_release(release(["goldfish", "tabby cat"])).units) == 1
