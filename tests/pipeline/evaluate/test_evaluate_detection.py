"""`evaluate` with a transformers object detector on a COCO-O-style release: a tiny YOLOS
built from a config (no backbone download), boxes checked against the model run by hand,
AP per domain checked against pycocotools called directly on the stored predictions."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data

from pipeline.evaluate import EvalOptions, evaluate_release, parse_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 47, "name": "cup"}]


def save_tiny_yolos(out):
    import torch
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor

    torch.manual_seed(0)
    config = YolosConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                         image_size=[64, 64], patch_size=16, num_detection_tokens=4, num_labels=2,
                         id2label={0: "person", 1: "cup"}, label2id={"person": 0, "cup": 1})
    YolosForObjectDetection(config).eval().save_pretrained(out)
    YolosImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def scheduler():
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def coco_release(tmp_path_factory, scheduler):
    from pipeline.core.build import build_release
    from pipeline.core.manifest import parse_release

    root = tmp_path_factory.mktemp("coco")
    (root / "val2017").mkdir()
    Image.fromarray(data.astronaut()).resize((64, 48)).save(root / "val2017" / "000000000139.png")
    Image.fromarray(data.coffee()).resize((64, 48)).save(root / "val2017" / "000000000285.png")
    doc = {"images": [{"id": 285, "file_name": "000000000285.png", "width": 64, "height": 48},
                      {"id": 139, "file_name": "000000000139.png", "width": 64, "height": 48}],
           "annotations": [{"id": 1, "image_id": 139, "category_id": 1, "bbox": [10.0, 4.0, 30.0, 40.0],
                            "area": 1200.0, "iscrowd": 0},
                           {"id": 2, "image_id": 285, "category_id": 47, "bbox": [5.0, 5.0, 20.0, 15.0],
                            "area": 300.0, "iscrowd": 0}],
           "categories": CATEGORIES}
    (root / "instances.json").write_text(json.dumps(doc))
    release = parse_release({"name": "coco-o-tiny", "version": "0.0.1",
                             "source": {"kind": "coco", "images": str(root / "val2017"),
                                        "annotations": str(root / "instances.json")},
                             "shifts": [{"stage": "styles", "backend": "procedural",
                                         "domains": ["sketch", "weather"]}]})
    build_release(release, root / "release", scheduler=scheduler)
    return root / "release", save_tiny_yolos(root / "yolos")


def test_detector_boxes_and_ap_per_domain(coco_release, scheduler, tmp_path):
    import torch
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    release, model_dir = coco_release
    model = parse_model(str(model_dir))
    assert model.kind == "detector"
    [path] = evaluate_release(release, [model], tmp_path, options=EvalOptions(batch_size=2),
                              scheduler=scheduler)
    document = json.loads(path.read_text())
    rows = pq.read_table(tmp_path / "results" / "yolos.predictions.parquet").to_pylist()
    assert len(rows) == 4 and all(len(r["boxes"]) == 4 for r in rows)

    # the same model run by hand on the decoded shard image gives the stored boxes
    net = AutoModelForObjectDetection.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    first = rows[0]
    import tarfile

    with tarfile.open(release / first["shard"]) as tar:
        image = np.asarray(Image.open(tar.extractfile(f"{first['key']}.png")).convert("RGB"))
    with torch.no_grad():
        found = processor.post_process_object_detection(net(**processor(images=[image], return_tensors="pt")),
                                                        threshold=0.0, target_sizes=[image.shape[:2]])[0]
    best = int(found["scores"].argmax())
    x0, y0, x1, y1 = found["boxes"][best].tolist()
    assert first["boxes"][0] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=1e-3)
    assert first["box_scores"][0] == pytest.approx(float(found["scores"][best]), abs=1e-6)

    # AP per domain = pycocotools on the release's annotations and the stored predictions
    coco_o = document["metrics"]["coco_o"]
    for domain in ("sketch", "weather"):
        truth = COCO(str(release / "annotations" / domain / "instances.json"))
        ids = {im["file_name"].rsplit(".", 1)[0]: im["id"] for im in truth.dataset["images"]}
        names = {c["name"]: c["id"] for c in truth.dataset["categories"]}
        labels = ["person", "cup"]
        detections = [{"image_id": ids[r["key"]], "category_id": names[labels[lab]], "bbox": box, "score": s}
                      for r in rows if r["config"] == domain
                      for box, s, lab in zip(r["boxes"], r["box_scores"], r["box_labels"])]
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation = COCOeval(truth, truth.loadRes(detections), "bbox")
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        assert coco_o["ap"][domain] == pytest.approx(max(evaluation.stats[0], 0.0))
    assert coco_o["mean_ap"] == pytest.approx(np.mean([coco_o["ap"]["sketch"], coco_o["ap"]["weather"]]))
    assert coco_o["clean_ap"] is None and "effective_robustness" not in coco_o


def test_clean_source_gives_the_clean_ap_and_the_drop(coco_release, scheduler, tmp_path):
    from pipeline.core.manifest import parse_release
    from pipeline.evaluate.clean import clean_annotations
    from pipeline.evaluate.shards import read_provenance
    from pipeline.sources import open_source

    release, model_dir = coco_release
    [path] = evaluate_release(release, [parse_model(str(model_dir))], tmp_path, options=EvalOptions(batch_size=2),
                              scheduler=scheduler, clean_source=True)
    coco_o = json.loads(path.read_text())["metrics"]["coco_o"]
    assert set(coco_o["ap"]) == {"sketch", "weather"} and coco_o["clean_ap"] is not None
    assert coco_o["ap_drop"] == pytest.approx(coco_o["clean_ap"] - coco_o["mean_ap"])
    source = open_source(parse_release(read_provenance(release)["manifest"]).source)
    doc = clean_annotations(source, list(source.index()))
    assert sorted((im["id"], im["file_name"]) for im in doc["images"]) == [(139, "000000000139.png"),
                                                                             (285, "000000000285.png")]
    assert len(doc["annotations"]) == 2 and doc["categories"] == CATEGORIES
