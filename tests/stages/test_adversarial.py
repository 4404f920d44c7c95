"""Adversarial stage: tiny CNNs trained here on synthetic shapes, saved, loaded back and attacked."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

from stages.adversarial import AdversarialParams, AdversarialStage, check_lossless  # noqa: E402
from stages.adversarial.transfer import transfer_summary  # noqa: E402
from stages.base import Batch  # noqa: E402
from tests.tiny_classifiers import (  # noqa: E402
    LABELS,
    classifier_spec,
    predict,
    save_exported,
    save_scripted,
    shapes,
    train,
    train_shape_cnns,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Surrogate (TorchScript), a second surrogate and a held-out net (torch.export .pt2)."""
    root = tmp_path_factory.mktemp("adv_models")
    nets = train_shape_cnns({"surrogate": 0, "surrogate2": 2, "held_out": 1})
    save_scripted(nets["surrogate"], root / "surrogate.pt")
    for name in ("surrogate2", "held_out"):
        save_exported(nets[name], root / f"{name}.pt2")
    return {"root": root, "nets": nets}


@pytest.fixture(scope="module")
def test_set():
    return shapes(64, seed=2)


def spec(models, name: str, **extra) -> dict:
    suffix = ".pt" if name == "surrogate" else ".pt2"
    return classifier_spec(models["root"] / f"{name}{suffix}", name, **extra)


def make_stage(models, **overrides) -> AdversarialStage:
    fields = {"stage": "adversarial", "surrogates": [spec(models, "surrogate")],
              "held_out": [spec(models, "held_out")], "epsilons": [8, 16], "steps": 10, **overrides}
    return AdversarialStage(AdversarialParams(**fields))


def run(stage: AdversarialStage, images, classes, eps_index: int = 0, seed0: int = 0) -> tuple[Batch, object]:
    variant = stage.variants()[eps_index]
    batch = Batch(keys=[f"s{i}" for i in range(len(images))], images=[im.copy() for im in images],
                  seeds=[seed0 + i for i in range(len(images))], labels=[int(c) for c in classes])
    return stage.apply(batch, variant), variant


def rows_of(batch: Batch, variant) -> list[dict]:
    return [{"config": variant.config, "status": status, "shift": json.dumps({**variant.params, **shift})}
            for status, shift in zip(batch.status, batch.shift)]


def test_linf_attack_fools_surrogate_within_exact_budget(models, test_set):
    images, classes = test_set
    stage = make_stage(models)
    for eps_index, eps in enumerate((8, 16)):
        out, variant = run(stage, images, classes, eps_index)
        assert out.status == ["ok"] * len(images)
        summary = transfer_summary(rows_of(out, variant))["configs"][variant.config]
        rates = summary["surrogates"]["surrogate"]
        assert rates["clean_accuracy"] >= 0.9
        assert rates["adversarial_accuracy"] <= 0.1
        diffs = [np.abs(a.astype(int) - c.astype(int)).max() for a, c in zip(out.images, images)]
        assert max(diffs) == eps  # the budget is used to the last level and never exceeded
        assert [s["achieved_linf_levels"] for s in out.shift] == diffs
        assert all(img.dtype == np.uint8 and img.shape == (32, 32, 3) for img in out.images)


def test_l2_attack_respects_budget_after_rounding(models, test_set):
    images, classes = test_set
    stage = make_stage(models, norm="l2", epsilons=[1.0], epsilon_unit="unit", random_start=True, held_out=[])
    out, variant = run(stage, images[:24], classes[:24])
    assert variant.config == "pgd-l2-eps1"
    l2 = [np.linalg.norm((a.astype(float) - c.astype(float)) / 255) for a, c in zip(out.images, images)]
    assert max(l2) <= 1.0 and min(l2) >= 0.995  # rounding keeps the budget it reached
    assert [s["achieved_l2"] for s in out.shift] == pytest.approx(l2)
    fooled = np.mean([s["on_surrogates"]["surrogate"]["success"] for s in out.shift])
    assert fooled >= 0.8


def test_transfer_to_held_out_beats_same_norm_noise(models, test_set):
    images, classes = test_set
    stage = make_stage(models, surrogates=[spec(models, "surrogate"), spec(models, "surrogate2")],
                       momentum=1.0, epsilons=[16])
    out, variant = run(stage, images, classes)
    held = transfer_summary(rows_of(out, variant))["configs"]["pgd-mi-linf-eps16"]["held_out"]["held_out"]
    rng = np.random.default_rng(0)
    noisy = np.clip(images.astype(int) + rng.choice([-16, 16], images.shape), 0, 255).astype(np.uint8)
    noise_success = float(np.mean(predict(models["nets"]["held_out"], noisy) != classes))
    assert held["clean_accuracy"] >= 0.9
    assert held["success_rate"] >= noise_success + 0.4, (held, noise_success)


def test_png_round_trip_is_bit_exact_and_within_budget(models, test_set):
    images, classes = test_set
    out, _ = run(make_stage(models, held_out=[]), images[:8], classes[:8])
    for adv, clean in zip(out.images, images):
        buffer = io.BytesIO()
        Image.fromarray(adv).save(buffer, format="PNG")
        back = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
        assert np.array_equal(back, adv)
        assert np.abs(back.astype(int) - clean.astype(int)).max() <= 8
    with pytest.raises(ValueError, match="output.encoding: png"):
        check_lossless("jpg")
    check_lossless("png")


def test_same_seed_same_bytes_other_seed_other_bytes(models, test_set):
    images, classes = test_set
    stage = make_stage(models, held_out=[], random_start=True, input_diversity=0.7, ti_kernel=5, steps=4)
    digest = lambda batch: hashlib.sha256(b"".join(im.tobytes() for im in batch.images)).hexdigest()  # noqa: E731
    first, _ = run(stage, images[:6], classes[:6])
    again, _ = run(stage, images[:6], classes[:6])
    other, _ = run(stage, images[:6], classes[:6], seed0=100)
    assert digest(first) == digest(again)
    assert digest(first) != digest(other)


def test_mixed_sizes_and_grayscale_keep_their_shapes(models, test_set):
    images, classes = test_set
    big = np.asarray(Image.fromarray(images[0]).resize((40, 48)))
    gray = images[1].mean(axis=2).astype(np.uint8)
    stage = make_stage(models, held_out=[], epsilons=[4])
    batch = Batch(keys=["big", "gray", "small"], images=[big, gray, images[2]], seeds=[1, 2, 3],
                  labels=[int(classes[0]), int(classes[1]), LABELS[classes[2]]])
    out = stage.apply(batch, stage.variants()[0])
    assert out.status == ["ok"] * 3
    assert [im.shape for im in out.images] == [(48, 40, 3), (32, 32), (32, 32, 3)]
    assert np.abs(out.images[0].astype(int) - big.astype(int)).max() == 4


def test_transformers_classifier_loads_aligned_and_joins_the_ensemble(models, test_set, tmp_path):
    import torch
    from transformers import AutoModelForImageClassification, ResNetConfig

    # the model's own label order differs from the source's: logits must be realigned by name
    model_order = ["triangle", "circle", "square"]
    config = ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                          layer_type="basic", num_labels=3, id2label=dict(enumerate(model_order)),
                          label2id={n: i for i, n in enumerate(model_order)})
    torch.manual_seed(0)  # fixed initial weights: about 1 init in 8 trains to only 75% in 6 epochs
    net = AutoModelForImageClassification.from_config(config)
    images, classes = shapes(900, seed=1)
    remap = np.array([model_order.index(name) for name in LABELS])
    train(net, 3, images, remap[classes], epochs=6, forward=lambda x: net(pixel_values=x).logits)
    net.save_pretrained(tmp_path / "resnet")
    (tmp_path / "resnet" / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    assert {p.name for p in (tmp_path / "resnet").iterdir()} >= {"config.json", "model.safetensors"}

    test_images, test_classes = test_set
    stage = make_stage(models, surrogates=[{"path": str(tmp_path / "resnet")}, spec(models, "surrogate")],
                       labels=LABELS, ensemble="logits")
    out, variant = run(stage, test_images[:32], test_classes[:32])
    rates = transfer_summary(rows_of(out, variant))["configs"][variant.config]["surrogates"]
    assert rates["resnet"]["clean_accuracy"] >= 0.8
    assert rates["resnet"]["adversarial_accuracy"] <= rates["resnet"]["clean_accuracy"] - 0.4
    hashes = stage.weight_hashes()
    weights = (tmp_path / "resnet" / "model.safetensors").read_bytes()
    assert hashes["surrogate/resnet/model.safetensors"] == hashlib.sha256(weights).hexdigest()


@pytest.mark.parametrize("field, value, message", [
    ("epsilons", [0], "finite and > 0"), ("epsilons", [-2], "finite and > 0"),
    ("epsilons", [float("inf")], "finite and > 0"), ("epsilons", [float("nan")], "finite and > 0"),
    ("steps", 0, "greater than or equal to 1"), ("ti_kernel", 4, "odd width"),
    ("epsilons", [300], "above the pixel range"), ("step_size", -1.0, "finite and > 0"),
])
def test_bad_params_are_refused_naming_the_problem(models, field, value, message):
    with pytest.raises(ValueError, match=message):
        make_stage(models, **{field: value})


def test_label_space_mismatch_and_bad_samples_become_error_rows(models, test_set):
    images, classes = test_set
    wrong = {**spec(models, "held_out"), "labels": ["cat", "dog", "bird"]}
    out, _ = run(make_stage(models, held_out=[wrong]), images[:2], classes[:2])
    assert out.status == ["error", "error"]
    assert "label space differs" in out.reason[0] and "cat" in out.reason[0]

    stage = make_stage(models, held_out=[], epsilons=[4])
    batch = Batch(keys=["bright", "name", "ok"], seeds=[1, 2, 3],
                  images=[np.full((32, 32, 3), 1.5, np.float32), images[0], images[1]],
                  labels=[0, "hexagon", int(classes[1])])
    out = stage.apply(batch, stage.variants()[0])
    assert out.status == ["error", "error", "ok"]
    assert "in [0,1]" in out.reason[0] and "hexagon" in out.reason[1]


def test_variants_resources_and_weight_hashes(models):
    stage = make_stage(models, epsilons=[16, 32, 4.5], input_diversity=0.5, ti_kernel=15, momentum=1.0,
                       target="square", device="cuda")
    assert [v.config for v in stage.variants()] == ["pgd-mi-di-ti-tsquare-linf-eps16",
                                                    "pgd-mi-di-ti-tsquare-linf-eps32",
                                                    "pgd-mi-di-ti-tsquare-linf-eps4p5"]
    assert stage.variants()[0].params["epsilon_pixel"] == pytest.approx(16 / 255)
    assert stage.resources == {"GPU": 1} and make_stage(models).resources == {}
    digest = hashlib.sha256((models["root"] / "surrogate.pt").read_bytes()).hexdigest()
    assert stage.weight_hashes()["surrogate/surrogate/surrogate.pt"] == digest
    assert set(stage.weight_hashes()) == {"surrogate/surrogate/surrogate.pt",
                                          "held_out/held_out/held_out.pt2"}


def test_targeted_attack_moves_predictions_to_the_target(models, test_set):
    images, classes = test_set
    stage = make_stage(models, target="square", epsilons=[16], held_out=[])
    out, _ = run(stage, images[:24], classes[:24])
    hits = [s["on_surrogates"]["surrogate"]["adversarial"] == LABELS.index("square") for s in out.shift]
    assert np.mean(hits) >= 0.9
    assert all(s["target_index"] == 1 for s in out.shift)


def test_release_build_stores_budgeted_pngs_and_transfer_rates(models, tmp_path):
    import tarfile

    from pipeline.core.build import build_release
    from pipeline.core.manifest import parse_release

    images, classes = shapes(6, seed=5)
    for i, (image, cls) in enumerate(zip(images, classes)):
        folder = tmp_path / "clean" / LABELS[cls]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"img{i}.png")
    release = parse_release({
        "name": "adv-tiny", "version": "0.0.1", "seed": 3,
        "source": {"kind": "folder", "path": str(tmp_path / "clean")},
        "shifts": [{"stage": "adversarial", "labels": LABELS, "surrogates": [spec(models, "surrogate")],
                    "held_out": [spec(models, "held_out")], "epsilons": [8], "steps": 5}],
        "output": {"formats": ["webdataset"], "samples_per_shard": 6, "encoding": "png"},
    })
    result = build_release(release, tmp_path / "out", workers=1)
    assert result.counts == {"total": 6, "ok": 6, "rejected": 0, "error": 0}

    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    rates = provenance["extras"]["adversarial"]["configs"]["pgd-linf-eps8"]
    assert rates["counts"]["ok"] == 6 and rates["held_out"]["held_out"]["samples"] == 6
    assert rates["surrogates"]["surrogate"]["adversarial_accuracy"] < rates["surrogates"]["surrogate"][
        "clean_accuracy"]
    assert any(name.endswith("surrogate.pt") for name in provenance["stages"][0]["weights"])

    clean_by_key = {f"{LABELS[c]}__img{i}": im for i, (im, c) in enumerate(zip(images, classes))}
    with tarfile.open(tmp_path / "out" / "data" / "pgd-linf-eps8" / "test-00000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    pngs = {name[:-4]: data for name, data in members.items() if name.endswith(".png")}
    assert sorted(pngs) == sorted(clean_by_key)
    for key, data in pngs.items():
        stored = np.asarray(Image.open(io.BytesIO(data)))
        assert np.abs(stored.astype(int) - clean_by_key[key].astype(int)).max() <= 8
        doc = json.loads(members[f"{key}.json"])
        assert doc["shift"]["achieved_linf_levels"] == np.abs(stored.astype(int) - clean_by_key[key]).max()
