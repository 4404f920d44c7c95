"""`kind: coco` — images plus a COCO `instances_*.json`, for detection-style shifts.

One item per image entry, in image-id order; the key is the file stem
(cleaned), the sha256 that of the file's bytes. `load` decodes the pixels and
puts the image record and its annotations (bbox [x, y, w, h], category id and
name, area, iscrowd) in the sample's meta, so a stage that keeps the image
size keeps every box valid. `coco_instances` turns the rows of a built config
back into a COCO json (COCO-O layout: one instances file per domain).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.sources.base import Loaded, Source, SourceError, SourceItem, SourceSpec, safe_key, sha256_bytes
from pipeline.sources.imagefile import decode_image
from pipeline.sources.unique_keys import UniqueKeys
from stages.base import ManifestPath

ANNOTATION_FIELDS = ("id", "category_id", "bbox", "area", "iscrowd", "segmentation")


class CocoSpec(SourceSpec):
    kind: Literal["coco"]
    images: ManifestPath = Field(description="folder holding the image files named in the json")
    annotations: ManifestPath = Field(description="COCO instances json (images, annotations, categories)")
    limit: int | None = Field(default=None, ge=1, description="only the first N images (by id)")


class CocoSource(Source):
    kind = "coco"
    Spec = CocoSpec

    @cached_property
    def dataset(self) -> dict[str, Any]:
        path = Path(self.spec.annotations)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SourceError(f"coco annotations {path}: cannot read ({exc})") from None
        missing = [k for k in ("images", "annotations", "categories") if k not in data]
        if missing:
            raise SourceError(
                f"coco annotations {path}: expected keys images/annotations/categories, missing {missing}"
            )
        return data

    @cached_property
    def _by_image(self) -> dict[int, list[dict[str, Any]]]:
        names = {c["id"]: c["name"] for c in self.dataset["categories"]}
        grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for ann in self.dataset["annotations"]:
            kept = {k: ann[k] for k in ANNOTATION_FIELDS if k in ann}
            grouped[ann["image_id"]].append({**kept, "category": names.get(ann["category_id"])})
        return grouped

    @cached_property
    def _records(self) -> dict[int, dict[str, Any]]:
        return {im["id"]: im for im in self.dataset["images"]}

    def index(self) -> Iterator[SourceItem]:
        images = sorted(self.dataset["images"], key=lambda im: im["id"])
        if self.spec.limit:
            images = images[: self.spec.limit]
        keys = UniqueKeys()
        for record in images:
            path = Path(self.spec.images) / record["file_name"]
            try:
                sha = sha256_bytes(path.read_bytes())
            except OSError:
                sha = sha256_bytes(b"")  # unreadable: load() reports it as an error row
            key = keys.claim(safe_key(Path(record["file_name"]).stem), record["file_name"])
            yield SourceItem(key=key, sha256=sha, label=None, ref=record["id"])

    def load(self, item: SourceItem) -> Loaded:
        record = self._records[item.ref]
        path = Path(self.spec.images) / record["file_name"]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SourceError(f"{path}: {exc.strerror}") from None
        image, notes = decode_image(data, str(path))
        if "width" in record and (image.shape[1], image.shape[0]) != (record["width"], record["height"]):
            raise SourceError(
                f"{path}: {image.shape[1]}x{image.shape[0]} px but the json says "
                f"{record['width']}x{record['height']}"
            )
        meta = {
            "image_id": record["id"],
            "file_name": record["file_name"],
            "width": image.shape[1],
            "height": image.shape[0],
            "annotations": self._by_image.get(record["id"], []),
        }
        if notes:
            meta["notes"] = notes
        return Loaded(image=image, meta=meta)

    def coco_instances(self, rows: list[dict[str, Any]], extension: str) -> dict[str, Any]:
        """The COCO instances json of one built config, with this source's categories."""
        return domain_annotations(rows, self.dataset["categories"], extension)


def domain_annotations(
    rows: list[dict[str, Any]], categories: list[dict[str, Any]], extension: str = "png"
) -> dict[str, Any]:
    """A COCO instances json for the ok samples of one config (rows as in
    samples.parquet, meta as JSON text or dict); file names are the shard
    member names `<key>.<extension>`, ids stay the source's."""
    images, annotations = [], []
    for row in rows:
        if row["status"] != "ok":
            continue
        meta = json.loads(row["meta"]) if isinstance(row["meta"], str) else row["meta"]
        images.append(
            {
                "id": meta["image_id"],
                "file_name": f"{row['key']}.{extension}",
                "width": meta["width"],
                "height": meta["height"],
            }
        )
        for ann in meta.get("annotations", []):
            annotations.append(
                {k: ann[k] for k in ANNOTATION_FIELDS if k in ann} | {"image_id": meta["image_id"]}
            )
    return {"images": images, "annotations": annotations, "categories": categories}


SOURCE = CocoSource
