"""`kind: scene_graph` — real images selected and split by their scene-graph metadata (MetaShift).

    source:
      kind: scene_graph
      scene_graphs: data/gqa/train_sceneGraphs.json     # or a .csv / .parquet table
      images: data/gqa/images                           # file = images/<image_pattern>
      split: {mode: domain, classes: [cat, dog], train: {...}, test: {...}}

The index reads the metadata once (streamed), builds the requested split and
yields the selected images in the order train then test, by class: key
`<split>-<image id>`, sha256 of the file bytes, label = position of the class
in `split.classes`, ref = path, meta = the split tags (fingerprinted). `load` returns the
pixels and meta `{split, class, image_id, subsets[, group]}`. A missing or
unreadable file becomes an error row. Unknown class or context names, subsets
below the size threshold and empty splits fail before any work starts, as a
`ManifestError`; train/test overlap is already refused by manifest validation.
`describe()` (hence `provenance.json`) carries `split_report`: the counts and the
distance d of every train/test pair. Relative paths are taken from the current
working directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.sources.base import ContainedFiles, Loaded, Source, SourceItem, SourceSpec, safe_key
from pipeline.sources.imagefile import MAX_PIXELS, MaxPixels, Oversize, decode_image
from pipeline.sources.unique_keys import UniqueKeys
from stages.base import ManifestPath
from stages.metashift.splits import SplitRequest, SplitResult
from stages.metashift.subsets import AttributeVocabulary, ContextKind, Thresholds

# sha256 of no bytes: the hash of an image that could not be read while indexing


class SceneGraphSpec(SourceSpec):
    kind: Literal["scene_graph"]
    scene_graphs: ManifestPath = Field(
        description="GQA/Visual Genome *_sceneGraphs.json, or a CSV/Parquet table with "
        "columns image_id, objects[, attributes]"
    )
    images: ManifestPath = Field(description="folder holding the image files")
    image_pattern: str = Field(
        default="{image_id}.jpg", pattern=r"\{image_id\}", description="file name of an image inside `images`"
    )
    contexts: list[ContextKind] = Field(
        default=["object"],
        min_length=1,
        description="context kinds: object (co-occurring objects) and/or "
        "attribute (attributes of the class object, named attr:<attribute>)",
    )
    attribute_vocabulary: AttributeVocabulary = Field(
        default="official",
        description="official: attribute contexts only from the official MetaShift attribute ontology; any: all",
    )
    thresholds: Thresholds = Thresholds()
    split: SplitRequest
    max_pixels: MaxPixels = MAX_PIXELS
    oversize: Oversize = "refuse"


class SceneGraphSource(Source):
    kind = "scene_graph"
    Spec = SceneGraphSpec

    def __init__(self, spec: SceneGraphSpec):
        super().__init__(spec)
        self.root = Path(spec.images).expanduser()
        self.files = ContainedFiles(self.root, "image folder")
        self._split: SplitResult | None = None

    def index(self) -> Iterator[SourceItem]:
        keys = UniqueKeys()
        for a in self.split_result().assignments:
            rel = self.spec.image_pattern.format(image_id=a.image_id)
            key = keys.claim(f"{a.split}-{safe_key(a.image_id)}", identity=a.image_id)
            yield SourceItem(key=key, sha256=self.files.sha256(rel), label=a.label, ref=rel, meta=a.meta())

    def load(self, item: SourceItem) -> Loaded:
        data = self.files.read(item.ref, item.sha256)
        pixels, notes = decode_image(data, item.ref, self.spec.max_pixels, self.spec.oversize)
        return Loaded(pixels, {**(item.meta or {}), "path": item.ref, "notes": notes})

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "classes": list(self.spec.split.classes),
            "split_report": report_of(self.split_result()),
        }

    def split_result(self) -> SplitResult:
        """The split, computed once per source object; bad requests raise `ManifestError`."""
        if self._split is None:
            self._split = compute_split(self.spec)
        return self._split


def compute_split(spec: SceneGraphSpec) -> SplitResult:
    """Read the metadata and build the requested split; any problem is a `ManifestError`."""
    from stages.base import ManifestError
    from stages.metashift.scene_graphs import MetaShiftError
    from stages.metashift.subpopulation import make_split
    from stages.metashift.subsets import ContextIndex, SubsetCatalog

    if not Path(spec.images).expanduser().is_dir():
        raise ManifestError(f"source.images: {spec.images} is not a folder")
    try:
        index = ContextIndex.from_path(Path(spec.scene_graphs).expanduser(), "attribute" in spec.contexts)
        catalog = SubsetCatalog(index, spec.thresholds, spec.contexts, spec.attribute_vocabulary)
        return make_split(catalog, spec.split)
    except MetaShiftError as exc:
        raise ManifestError(f"source (scene_graph): {exc}") from None


def split_report(spec: SceneGraphSpec | dict[str, Any]) -> dict[str, Any]:
    """Counts and the distance d of every train/test pair of a `scene_graph` source spec
    (a `SceneGraphSpec` or the manifest's `source:` mapping), without building anything."""
    if isinstance(spec, dict):
        spec = SceneGraphSpec.model_validate(spec)
    return report_of(compute_split(spec))


def report_of(result: SplitResult) -> dict[str, Any]:
    return {**result.report, "counts": result.counts()}


SOURCE = SceneGraphSource
