"""Filters: tiny random CLIP / DINOv2 / ViT models saved to disk and loaded back,
the rule logic on crafted score tables, trajectories, quality and dedup."""

from __future__ import annotations

import hashlib
import json
import string

import cv2
import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from skimage import data as skdata

from stages.base import Batch
from stages.filters import FilterChain, FiltersSpec, Rule, Threshold, keep_mask, rejection_reason
from stages.filters.clip import ClipEncoder
from stages.filters.dedup import nearest_earlier, perceptual_hash
from stages.filters.models import load_clip, load_dino

CNS_THRESHOLDS = {"clip_class": 28.739, "clip_class_shift": 35.293, "clip_ref": 0.8059, "dino_ref": 0.7812}
CNS_RULE = {"kind": "k_of_n", "k": 2, "of": list(CNS_THRESHOLDS)}


def write_tiny_clip(out):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    symbols = list(string.ascii_lowercase + string.digits + ",.'-")
    vocab = ["<|startoftext|>", "<|endoftext|>"] + symbols + [s + "</w>" for s in symbols]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[])
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8)
    CLIPModel(config).save_pretrained(out)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)
    return str(out)


def write_tiny_dino(out):
    import torch
    from transformers import AutoModel, BitImageProcessor, Dinov2Config

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                          image_size=32, patch_size=8)
    AutoModel.from_config(config).save_pretrained(out)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)
    return str(out)


def write_tiny_classifier(out):
    import torch
    from transformers import BitImageProcessor, ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    labels = {0: "goldfish, Carassius auratus", 1: "tabby cat", 2: "coffee mug"}
    config = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=32, patch_size=8, id2label=labels,
                       label2id={v: k for k, v in labels.items()})
    ViTForImageClassification(config).save_pretrained(out)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"clip": write_tiny_clip(root / "clip"), "dino": write_tiny_dino(root / "dino"),
            "vit": write_tiny_classifier(root / "vit")}


def pictures():
    names = ("astronaut", "chelsea", "coffee", "rocket")
    return [cv2.resize(getattr(skdata, n)(), (48, 40), interpolation=cv2.INTER_AREA) for n in names]


def trajectory_batch(n_trajectories=2, scales=(0.0, 1.0, 2.0)):
    """Scale s of trajectory t: picture t blended towards picture t+2 by s / 2."""
    pics = [p.astype(np.float64) for p in pictures()]
    keys, images, shift, labels = [], [], [], []
    for t in range(n_trajectories):
        for s in scales:
            keys.append(f"t{t}_s{s:g}".replace(".", "p"))
            images.append(((1 - s / 2) * pics[t] + s / 2 * pics[t + 2]).round().astype(np.uint8))
            shift.append({"trajectory": f"t{t}", "scale": s, "shift_name": "heavy snow"})
            labels.append(["astronaut", "cat"][t])
    return Batch(keys=keys, images=images, seeds=list(range(len(keys))), labels=labels, shift=shift)


def spec(chain, **extra):
    return FiltersSpec.model_validate({"chain": chain, **extra})


# -- model filters ---------------------------------------------------------------------------------------


def manual_clip(path, images, prompts):
    import torch

    model, processor = load_clip(path)
    with torch.inference_mode():
        img = model.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output
        tokens = processor(text=prompts, return_tensors="pt", padding=True)
        txt = model.get_text_features(**tokens).pooler_output
    img, txt = torch.nn.functional.normalize(img, dim=1), torch.nn.functional.normalize(txt, dim=1)
    return np.maximum(100 * (img * txt).sum(1).numpy(), 0)


def test_clip_text_scores_are_clipscore_of_the_class_and_shift_prompts(models):
    batch = trajectory_batch(2, scales=(0.0, 2.0))
    chain = FilterChain(spec([{"filter": "clip_class", "model": models["clip"]},
                              {"filter": "clip_class_shift", "model": models["clip"]}]))
    chain(batch)
    got_class = np.array([s["clip_class"] for s in batch.scores])
    got_shift = np.array([s["clip_class_shift"] for s in batch.scores])
    want_class = manual_clip(models["clip"], batch.images, [f"a photo of a {c}" for c in batch.labels])
    prompts = [f"a photo of a {c} in heavy snow" for c in batch.labels]
    want_shift = manual_clip(models["clip"], batch.images, prompts)
    np.testing.assert_allclose(got_class, want_class, atol=1e-4)
    np.testing.assert_allclose(got_shift, want_shift, atol=1e-4)
    assert not np.allclose(got_class, got_shift)
    assert load_clip(models["clip"]) is load_clip(models["clip"])  # loaded once per process


def test_reference_filters_embed_each_reference_once(models, monkeypatch):
    calls = []
    original = ClipEncoder.images
    counting = lambda self, images: calls.append(len(images)) or original(self, images)
    monkeypatch.setattr(ClipEncoder, "images", counting)
    batch = trajectory_batch(2, scales=(0.0, 1.0, 2.0))
    chain = FilterChain(spec([{"filter": "clip_ref", "model": models["clip"], "batch_size": 4},
                              {"filter": "dino_ref", "model": models["dino"]}]))
    chain(batch)
    assert calls == [2, 4, 2]  # the two references once, then the six samples in chunks of 4
    for name in ("clip_ref", "dino_ref"):
        values = np.array([s[name] for s in batch.scores]).reshape(2, 3)
        np.testing.assert_allclose(values[:, 0], 1.0, atol=1e-5)  # scale 0 is its own reference
        assert (values[:, 1:] < 0.9999).all() and (values[:, 1:] > -1).all()
    assert load_dino(models["dino"]) is load_dino(models["dino"])
    assert chain.stats()["filters"]["clip_ref"]["samples"] == 6


def test_missing_reference_and_class_name_become_error_rows(models):
    batch = trajectory_batch(2, scales=(0.0, 1.0))
    batch.shift[2] = {**batch.shift[2], "scale": 0.5}  # trajectory t1 loses its scale-0 sample
    batch.labels[1] = None                            # sample 1 loses its class name
    chain = FilterChain(spec([{"filter": "clip_class", "model": models["clip"]},
                              {"filter": "dino_ref", "model": models["dino"]}]))
    chain(batch)
    assert batch.status == ["ok", "error", "error", "error"]
    assert batch.reason[1].startswith("clip_class: no class name")
    assert batch.reason[2].startswith("dino_ref: no scale-0 reference for trajectory 't1'")
    assert set(batch.scores[0]) == {"clip_class", "dino_ref"}

    failed_reference = trajectory_batch(1, scales=(0.0, 1.0))
    failed_reference.labels[0] = None  # the scale-0 sample fails first, so scale 1 has no reference left
    chain(failed_reference)
    assert failed_reference.status == ["error", "error"]
    assert "no scale-0 reference" in failed_reference.reason[1]


def test_a_model_error_marks_its_samples_error_not_the_build(models, monkeypatch):
    def broken(self, images):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(ClipEncoder, "images", broken)
    batch = trajectory_batch(1, scales=(0.0, 1.0))
    FilterChain(spec([{"filter": "clip_class", "model": models["clip"]}, {"filter": "quality"}]))(batch)
    assert batch.status == ["error", "error"]
    assert batch.reason[0] == "clip_class: RuntimeError: CUDA out of memory"


def test_label_consistency_with_a_classifier_and_with_clip_zero_shot(models):
    import torch

    from stages.filters.models import load_classifier

    labels = [0, "tabby cat", "goldfish"]  # an index, a name, a synonym from "goldfish, Carassius auratus"
    batch = Batch(keys=["a", "b", "c"], images=pictures()[:3], seeds=[0, 1, 2], labels=labels)
    FilterChain(spec([{"filter": "label_consistency", "model": models["vit"], "top_k": 1}]))(batch)
    model, processor = load_classifier(models["vit"])
    with torch.inference_mode():
        probs = torch.softmax(model(**processor(images=batch.images, return_tensors="pt")).logits, 1).numpy()
    expected = [0, 1, 0]
    np.testing.assert_allclose([s["label_prob"] for s in batch.scores], probs[[0, 1, 2], expected], atol=1e-5)
    hits = [float(probs[i].argmax() == e) for i, e in enumerate(expected)]
    assert [s["label_consistency"] for s in batch.scores] == hits
    assert batch.status == ["ok" if h else "rejected" for h in hits]

    zero_shot = Batch(keys=["a", "b"], images=pictures()[:2], seeds=[0, 1], labels=["astronaut", "cat"])
    FilterChain(spec([{"filter": "label_consistency", "model": models["clip"], "mode": "clip",
                       "classes": ["astronaut", "cat"], "top_k": 2}]))(zero_shot)
    assert [s["label_consistency"] for s in zero_shot.scores] == [1.0, 1.0]  # top-2 of 2 always hits
    assert zero_shot.status == ["ok", "ok"]


def test_fingerprint_holds_weight_sha256_and_thresholds(models):
    chain = FilterChain(spec([{"filter": "dino_ref", "model": models["dino"]}],
                             thresholds={"dino_ref": 0.7812}))
    printed = chain.fingerprint()
    digest = hashlib.sha256(open(f"{models['dino']}/model.safetensors", "rb").read()).hexdigest()
    assert printed["filters"][0]["weights"] == {f"{models['dino']}/model.safetensors": digest}
    assert printed["thresholds"] == {"dino_ref": {"min": 0.7812, "max": None}}
    assert printed["rule"] == {"kind": "all", "k": 1, "of": []}
    json.dumps(printed)


# -- rules on crafted score tables -------------------------------------------------------------------------


def crafted_rows():
    """Rows passing 0..4 of the CNS thresholds (in order clip_class, clip_class_shift, clip_ref, dino_ref)."""
    high = {"clip_class": 30.0, "clip_class_shift": 36.0, "clip_ref": 0.9, "dino_ref": 0.8}
    low = {"clip_class": 21.3, "clip_class_shift": 30.0, "clip_ref": 0.5, "dino_ref": 0.25}
    names = list(high)
    return [{n: (high if j < passes else low)[n] for j, n in enumerate(names)} for passes in range(5)]


def test_k_of_n_keeps_rows_passing_two_of_four():
    thresholds = {n: Threshold(min=v) for n, v in CNS_THRESHOLDS.items()}
    rule = Rule(**CNS_RULE)
    reasons = [rejection_reason(row, thresholds, rule) for row in crafted_rows()]
    assert reasons[0] == ("clip_class 21.3 < 28.739; clip_class_shift 30 < 35.293; clip_ref 0.5 < 0.8059; "
                          "dino_ref 0.25 < 0.7812 (0 of 4 passed, need 2)")
    assert reasons[1] == "clip_class_shift 30 < 35.293; clip_ref 0.5 < 0.8059; dino_ref 0.25 < 0.7812 " \
                         "(1 of 4 passed, need 2)"
    assert reasons[2:] == [None, None, None]
    columns = {n: np.array([row[n] for row in crafted_rows()]) for n in CNS_THRESHOLDS}
    assert keep_mask(columns, thresholds, rule).tolist() == [False, False, True, True, True]
    assert keep_mask(columns, thresholds, Rule()).tolist() == [False, False, False, False, True]


def test_required_scores_must_pass_whatever_the_vote():
    thresholds = {**{n: Threshold(min=v) for n, v in CNS_THRESHOLDS.items()},
                  "quality_saturated": Threshold(max=0.95)}
    row = {**crafted_rows()[4], "quality_saturated": 0.99}
    assert rejection_reason(row, thresholds, Rule(**CNS_RULE)) == "quality_saturated 0.99 > 0.95"
    assert rejection_reason({**row, "clip_ref": float("nan")}, thresholds, Rule(**CNS_RULE)) \
        == "quality_saturated 0.99 > 0.95"  # a NaN vote fails, 3 of 4 still pass
    assert rejection_reason({}, {"dino_ref": Threshold(min=0.5)}, Rule()) == "dino_ref nan"


def test_chain_rejects_with_reasons_and_never_drops_rows():
    images = [pictures()[0], np.full((40, 48, 3), 7, np.uint8), pictures()[1]]
    batch = Batch(keys=list("abc"), images=images, seeds=[0, 1, 2], scores=[{"earlier": 1.0}, {}, {}])
    batch.fail(2, "corruptions: decode failed")
    FilterChain(spec([{"filter": "quality"}], thresholds={"quality_std": 50}))(batch)
    assert len(batch) == 3
    assert batch.status == ["ok", "rejected", "error"]
    assert batch.reason[1:] == ["quality_std 0 < 50", "corruptions: decode failed"]
    assert batch.images[1] is not None  # rejected samples keep their pixels for thumbnails
    assert set(batch.scores[0]) == {"earlier", "quality_std", "quality_saturated", "quality_finite",
                                    "quality_size"}
    assert batch.scores[2] == {}


def test_complete_trajectory_rejects_every_scale_of_a_broken_trajectory():
    batch = trajectory_batch(2, scales=(0.0, 1.0, 2.0))
    batch.images[4] = np.zeros_like(batch.images[4])  # trajectory t1 at scale 1 is blank
    batch.keys.append("loose")
    for name, value in (("images", pictures()[3]), ("seeds", 9), ("source_keys", "loose"), ("labels", "x"),
                        ("meta", {}), ("shift", {}), ("scores", {}), ("status", "ok"), ("reason", "")):
        getattr(batch, name).append(value)
    chain = FilterChain(spec([{"filter": "quality"}], complete_trajectory=True))
    chain(batch)
    assert batch.status == ["ok", "ok", "ok", "rejected", "rejected", "rejected", "ok"]
    assert batch.reason[4] == "quality_std 0 < 2; quality_saturated 1 > 0.95"
    assert batch.reason[3] == batch.reason[5] == "incomplete trajectory t1: scale 1.0 rejected"
    assert chain.stats()["rejected"] == {"rule": 1, "complete_trajectory": 2}


# -- quality and dedup -------------------------------------------------------------------------------------


def test_quality_catches_blank_saturated_non_finite_and_wrong_size():
    good = pictures()[0]
    saturated = np.where(good > 100, 255, 0).astype(np.uint8)
    non_finite = good.astype(np.float32) / 255
    non_finite[0, 0, 0] = np.nan
    images = [good, np.full_like(good, 128), saturated, non_finite, cv2.resize(good, (32, 32))]
    batch = Batch(keys=list("abcde"), images=images, seeds=list(range(5)))
    FilterChain(spec([{"filter": "quality", "size": [40, 48]}]))(batch)
    assert batch.status == ["ok", "rejected", "rejected", "rejected", "rejected"]
    assert batch.reason[1] == "quality_std 0 < 2"
    assert batch.reason[2] == "quality_saturated 1 > 0.95"
    assert batch.reason[3] == "quality_finite 0 < 1"
    assert batch.reason[4] == "quality_size 0 < 1"
    assert batch.scores[0]["quality_std"] == pytest.approx(float(good.std()))


def test_dedup_rejects_a_near_duplicate_but_not_scales_of_one_trajectory():
    pics = pictures()
    noisy = np.clip(pics[0].astype(int) + np.random.default_rng(0).integers(-3, 4, pics[0].shape), 0, 255)
    images = [pics[0], pics[1], noisy.astype(np.uint8), pics[2], pics[2]]
    shift = [{}, {}, {}, {"trajectory": "t", "scale": 0.0}, {"trajectory": "t", "scale": 0.5}]
    batch = Batch(keys=list("abcde"), images=images, seeds=list(range(5)), shift=shift)
    FilterChain(spec([{"filter": "dedup"}]))(batch)
    distances = [s["dedup_distance"] for s in batch.scores]
    assert batch.status == ["ok", "ok", "rejected", "ok", "ok"]
    assert distances[0] == 64 and distances[2] < 5 and distances[4] > 5
    assert batch.reason[2] == f"dedup_distance {distances[2]:.4g} < 5"
    bits = np.stack([perceptual_hash(im) for im in images])
    assert nearest_earlier(bits, ["a", "b", "c", "d", "d"]).tolist() == distances


# -- the manifest section ----------------------------------------------------------------------------------


def test_spec_includes_calibrated_thresholds_and_rejects_unknown_names(tmp_path, monkeypatch, models):
    monkeypatch.chdir(tmp_path)
    included = {"thresholds": CNS_THRESHOLDS, "rule": CNS_RULE}
    (tmp_path / "thresholds.yaml").write_text(yaml.safe_dump(included))
    chain = [{"filter": f, "model": models["clip" if f != "dino_ref" else "dino"]} for f in CNS_THRESHOLDS]
    parsed = spec(chain, include="thresholds.yaml", thresholds={"dino_ref": 0.5})
    assert parsed.thresholds["clip_class"] == Threshold(min=28.739)
    assert parsed.thresholds["dino_ref"] == Threshold(min=0.5)  # the manifest wins
    assert parsed.rule == Rule(**CNS_RULE)
    bad = [
        ({"chain": [{"filter": "quality"}], "thresholds": {"clip_class": 3}}, "no filter in chain produces"),
        ({"chain": [{"filter": "quality"}], "rule": {"kind": "k_of_n", "k": 3, "of": ["quality_std"]}},
         "k <="),
        ({"chain": [{"filter": "clip_class", "model": str(tmp_path / "nope")}]}, "does not exist"),
        ({"chain": [{"filter": "quality", "colour": 1}]}, "Extra inputs"),
        ({"chain": [{"filter": "quality"}], "include": "missing.yaml"}, "cannot read included"),
        ({"chain": [{"filter": "quality"}, {"filter": "quality"}]}, "listed twice"),
    ]
    for data, message in bad:
        with pytest.raises(ValidationError, match=message):
            FiltersSpec.model_validate(data)


def test_reference_filters_need_a_shift_that_emits_trajectories(models):
    from pipeline.core.manifest import ManifestError, parse_release

    source = {"kind": "samples", "images": ["astronaut"], "size": 32}
    release = {"name": "r", "version": "1", "source": source,
               "shifts": [{"stage": "corruptions", "corruptions": ["fog"], "severities": [1]}],
               "filters": {"chain": [{"filter": "dino_ref", "model": models["dino"]}]}}
    with pytest.raises(ManifestError, match="filters: dino_ref need trajectories"):
        parse_release(release)
    release["filters"] = {"chain": [{"filter": "quality"}], "complete_trajectory": True}
    with pytest.raises(ManifestError, match="filters: complete_trajectory need trajectories"):
        parse_release(release)
    release["filters"] = {"chain": [{"filter": "quality"}]}
    assert parse_release(release).filters.chain[0].filter == "quality"


def test_clip_scores_do_not_depend_on_what_shares_the_batch(models):
    from stages.filters.clip import ClipEncoder

    batch = trajectory_batch(2, scales=(0.0, 1.0, 2.0))
    prompts = ["a photo of a cat", "a photo of an astronaut in heavy snow, at night, far away"]
    together = ClipEncoder(models["clip"])
    images, texts = together.images(batch.images), together.texts(prompts)
    alone = ClipEncoder(models["clip"])
    for i, image in enumerate(batch.images):
        assert np.array_equal(alone.images([image])[0], images[i])
    assert np.array_equal(alone.texts(prompts[:1])[0], texts[0])  # not padded to the longer prompt
    reversed_ = ClipEncoder(models["clip"]).images(batch.images[::-1])
    assert np.array_equal(reversed_[::-1], images)


@pytest.mark.parametrize("which, message", [("dino", "model_type 'dinov2', expected one of \\['clip'\\]"),
                                            ("absent", "not a local folder and not in the local Hugging Face cache")])
def test_clip_filter_refuses_a_missing_or_non_clip_model_in_one_line(models, which, message, tmp_path):
    from stages.filters.clip import ClipRef

    path = str(tmp_path / "nowhere") if which == "absent" else models[which]
    if which == "absent":
        path = "nobody/no-such-clip-model"
    with pytest.raises(ValueError, match=message) as info:
        ClipRef(ClipRef.Params(filter="clip_ref", model=path)).weight_hashes()
    assert "\n" not in str(info.value) and str(info.value).startswith("clip_ref.model")
    assert ClipRef(ClipRef.Params(filter="clip_ref", model=models["clip"])).weight_hashes()


def test_rejection_reasons_print_enough_digits_to_show_the_failure():
    from stages.filters.base import Threshold

    assert Threshold(min=1.0).failure("clip_ref", 0.99999) == "clip_ref 0.99999 < 1"
    assert Threshold(max=0.95).failure("quality_saturated", 0.9500001) == "quality_saturated 0.9500001 > 0.95"
    assert Threshold(min=28.739).failure("clip_class", 21.3456) == "clip_class 21.35 < 28.739"
    assert Threshold(min=1.0).failure("clip_ref", 1.0) is None


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["clip_for_dino", "absent"])
def test_build_with_a_wrong_or_missing_filter_model_exits_2_before_writing(models, tmp_path, write_manifest, bad):
    import subprocess
    import sys

    model = models["clip"] if bad == "clip_for_dino" else "nobody/no-such-dino"
    manifest = write_manifest({
        "name": "bad-filter", "version": "0.0.1",
        "source": {"kind": "prompts", "classes": ["goldfish"], "seeds": [0]},
        "shifts": [{"stage": "nuisance", "model": str(tmp_path), "sliders": [{"shift": "snow", "path": "s.pt"}]}],
        "filters": {"chain": [{"filter": "dino_ref", "model": model}]},
    })
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "build", str(manifest), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert len(proc.stderr.strip().splitlines()) == 1 and "dino_ref.model" in proc.stderr, proc.stderr
    assert not out.exists()
