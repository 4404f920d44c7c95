"""COCO source and the styles stage: six domains, geometry kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from skimage import data

from pipeline.sources.coco import CocoSource, CocoSpec, domain_annotations
from stages.base import Batch
from stages.styles import DOMAINS, StylesParams, StylesStage
from tests.tiny_models import tiny_pipeline_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    (root / "val2017").mkdir()
    Image.fromarray(data.astronaut()).resize((64, 48)).save(root / "val2017" / "000000000139.jpg")
    Image.fromarray(data.coffee()).resize((56, 40)).save(root / "val2017" / "000000000285.png")
    doc = {
        "images": [
            {"id": 285, "file_name": "000000000285.png", "width": 56, "height": 40},
            {"id": 139, "file_name": "000000000139.jpg", "width": 64, "height": 48},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 139,
                "category_id": 1,
                "bbox": [10.0, 4.0, 30.0, 40.0],
                "area": 1200.0,
                "iscrowd": 0,
                "segmentation": [[10, 4, 40, 4, 40, 44]],
            },
            {
                "id": 2,
                "image_id": 285,
                "category_id": 47,
                "bbox": [5.0, 5.0, 20.0, 15.0],
                "area": 300.0,
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 47, "name": "cup"}],
    }
    (root / "instances_val2017.json").write_text(json.dumps(doc))
    return CocoSource(
        CocoSpec(kind="coco", images=str(root / "val2017"), annotations=str(root / "instances_val2017.json"))
    )


def coco_batch(source) -> Batch:
    items = list(source.index())
    loaded = [source.load(it) for it in items]
    return Batch(
        keys=[it.key for it in items],
        images=[x.image for x in loaded],
        seeds=[11, 12],
        meta=[x.meta for x in loaded],
    )


def test_coco_source_index_and_meta(coco):
    items = list(coco.index())
    assert [it.key for it in items] == ["000000000139", "000000000285"]  # image-id order
    assert [it.ref for it in items] == [139, 285] and all(len(it.sha256) == 64 for it in items)
    loaded = coco.load(items[0])
    assert loaded.image.shape == (48, 64, 3)
    assert loaded.meta["annotations"] == [
        {
            "id": 1,
            "category_id": 1,
            "category": "person",
            "bbox": [10.0, 4.0, 30.0, 40.0],
            "area": 1200.0,
            "iscrowd": 0,
            "segmentation": [[10, 4, 40, 4, 40, 44]],
        }
    ]


@pytest.mark.parametrize("domain", DOMAINS)
def test_procedural_domains_keep_geometry(coco, domain):
    stage = StylesStage(StylesParams(stage="styles", backend="procedural", domains=[domain]))
    variant = stage.variants()[0]
    batch = coco_batch(coco)
    sources = [im.copy() for im in batch.images]
    out = stage.apply(batch, variant)
    assert out.status == ["ok", "ok"] and out.keys == ["000000000139", "000000000285"]
    for src, im in zip(sources, out.images):
        assert im.shape == src.shape and im.dtype == np.uint8
        assert np.abs(im.astype(int) - src).mean() > 5
    assert out.meta[0]["annotations"][0]["bbox"] == [10.0, 4.0, 30.0, 40.0]
    again = stage.apply(coco_batch(coco), variant)
    assert all(np.array_equal(a, b) for a, b in zip(again.images, out.images))
    assert stage.weight_hashes() == {} and stage.resources == {}


def test_sketch_is_gray_and_tattoo_is_skin_toned(coco):
    from stages.styles import sketch, tattoo

    image = coco_batch(coco).images[0]
    pencil = sketch(image, np.random.default_rng(0))
    assert np.array_equal(pencil[:, :, 0], pencil[:, :, 2]) and pencil.mean() > 150
    ink = tattoo(image, np.random.default_rng(0)).reshape(-1, 3).mean(axis=0)
    assert ink[0] > ink[2]  # warm skin, not the source's colours


def test_diffusion_backend_keeps_size_and_names_objects(coco):
    stage = StylesStage(
        StylesParams(
            stage="styles",
            model=str(tiny_pipeline_dir()),
            device="cpu",
            steps=4,
            strength=0.5,
            resolution=32,
            domains=["painting", "tattoo"],
        )
    )
    variants = stage.variants()
    assert [v.config for v in variants] == ["painting", "tattoo"]
    out = stage.apply(coco_batch(coco), variants[1])
    assert out.status == ["ok", "ok"]
    assert [im.shape for im in out.images] == [(48, 64, 3), (40, 56, 3)]
    assert out.shift[0]["prompt"] == "a tattoo of a person, ink on skin"
    assert out.shift[1]["prompt"] == "a tattoo of a cup, ink on skin"
    again = stage.apply(coco_batch(coco), variants[1])
    assert np.array_equal(again.images[0], out.images[0])
    assert any(k.endswith("unet/diffusion_pytorch_model.safetensors") for k in stage.weight_hashes())


def test_domain_annotations_export(coco):
    batch = coco_batch(coco)
    rows = [
        {"key": f"{k}", "status": s, "meta": json.dumps(m)}
        for k, s, m in zip(batch.keys, ["ok", "error"], batch.meta)
    ]
    doc = domain_annotations(rows, coco.dataset["categories"])
    assert doc["images"] == [{"id": 139, "file_name": "000000000139.png", "width": 64, "height": 48}]
    assert doc["annotations"] == [
        {
            "id": 1,
            "image_id": 139,
            "category_id": 1,
            "bbox": [10.0, 4.0, 30.0, 40.0],
            "area": 1200.0,
            "iscrowd": 0,
            "segmentation": [[10, 4, 40, 4, 40, 44]],
        }
    ]
    assert [c["name"] for c in doc["categories"]] == ["person", "cup"]


def test_diffusion_backend_needs_a_model():
    with pytest.raises(ValidationError, match="needs model"):
        StylesParams(stage="styles")


def test_build_writes_coco_annotations_per_domain(coco, tmp_path):
    """Beside the shards: annotations/<domain>/instances.json with the source's boxes,
    listed in provenance (so publish uploads them) and removed with their domain."""
    import hashlib

    import webdataset as wds

    from pipeline.core.build import build_release
    from pipeline.core.manifest import parse_release
    from pipeline.hub.publish import collect_release_files

    def release(domains):
        return parse_release(
            {
                "name": "coco-o-tiny",
                "version": "0.0.1",
                "source": {"kind": "coco", "images": coco.spec.images, "annotations": coco.spec.annotations},
                "shifts": [{"stage": "styles", "backend": "procedural", "domains": domains}],
            }
        )

    result = build_release(release(["sketch", "weather"]), tmp_path, workers=1)
    assert result.counts == {"total": 4, "ok": 4, "rejected": 0, "error": 0}
    source = coco.dataset
    boxes = {a["image_id"]: a["bbox"] for a in source["annotations"]}
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert [f["path"] for f in prov["files"]] == [
        "annotations/sketch/instances.json",
        "annotations/weather/instances.json",
    ]
    for entry in prov["files"]:
        raw = (tmp_path / entry["path"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(raw).hexdigest() and entry["stage"] == "styles"
        doc = json.loads(raw)
        assert doc["categories"] == source["categories"]
        assert sorted((im["id"], im["file_name"], im["width"], im["height"]) for im in doc["images"]) == [
            (139, "000000000139.png", 64, 48),
            (285, "000000000285.png", 56, 40),
        ]
        assert {a["image_id"]: a["bbox"] for a in doc["annotations"]} == boxes
        assert [a.get("segmentation") for a in sorted(doc["annotations"], key=lambda a: a["id"])] == [
            [[10, 4, 40, 4, 40, 44]],
            None,
        ]
        assert segm_ap_of_ground_truth(doc, image_id=139) == 1.0
    # the file names are the shard members, and the images there have the annotated size
    tars = sorted(str(p) for p in (tmp_path / "data" / "sketch").glob("*.tar"))
    members = {s["__key__"]: s["png"].shape for s in wds.WebDataset(tars, shardshuffle=False).decode("rgb8")}
    assert members == {"000000000139": (48, 64, 3), "000000000285": (40, 56, 3)}
    _, files = collect_release_files(tmp_path)
    assert {"annotations/sketch/instances.json", "annotations/weather/instances.json"} <= {f.path for f in files}

    fewer = build_release(release(["sketch"]), tmp_path, workers=1)
    assert (fewer.built, fewer.skipped, fewer.removed) == (0, 1, ["weather/test-00000"])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "annotations").rglob("*")) == [
        "annotations/sketch",
        "annotations/sketch/instances.json",
    ]
    assert [f["path"] for f in json.loads((tmp_path / "provenance.json").read_text())["files"]] == [
        "annotations/sketch/instances.json"
    ]


def segm_ap_of_ground_truth(doc, image_id):
    """COCO segm AP of the annotations scored as detections of themselves (pycocotools)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(doc))
        gt.createIndex()
        detections = [dict(a, score=1.0) for a in doc["annotations"] if a["image_id"] == image_id]
        evaluation = COCOeval(gt, gt.loadRes(detections), "segm")
        evaluation.params.imgIds = [image_id]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return round(float(evaluation.stats[0]), 6)


def test_prompts_take_the_right_article():
    from stages.styles import describe_objects

    anns = [{"category": c} for c in ("airplane", "person", "umbrella", "elephant", "cup", "airplane")]
    assert describe_objects(anns) == "an airplane, a person, an umbrella, an elephant, a cup"
    assert describe_objects([]) == "a scene"
