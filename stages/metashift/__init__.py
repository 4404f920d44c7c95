"""MetaShift: natural distribution shifts selected from scene-graph metadata.

This family selects and splits real images rather than altering pixels:
- `scene_graphs` streams GQA / Visual Genome scene graphs and plain tables;
- `context_index` interns object names to codes in one pass over them and
  indexes which images hold which object (and attribute);
- `subsets` builds `class(context)` subsets under the size thresholds
  (attribute contexts from the official attribute ontology, `ontology`);
- `metagraph` links subsets by overlap and finds their communities;
- `official` reproduces the official code's networkx computations
  (unweighted greedy modularity, `spectral_layout`), with the merge loops in
  `modularity` (one graph, or many small ones side by side);
- `communities` merges communities into the meta-graph the official protocol
  measures d on; `distances` reports d under either protocol;
- `splits` (domain generalisation) and `subpopulation` turn a request into
  disjoint train/test images plus a report of the distance d of every
  train/test pair.

The `metashift` stage below is the identity on pixels. A `scene_graph`
source tags each image with `meta.split`; the stage has one variant per
split (`config` = the split name, `train` / `test`), and each variant keeps
only the samples of its split, so every split lands in its own
`data/<split>/` folder and dataset-card config. Every variant still walks
the whole source index, so a config's shard may come out empty, and an image
file that cannot be read (an error row made before any stage runs) is
reported once per split config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from stages.base import Batch, Stage, StageParams, Variant

SPLITS = ("train", "test")


class MetaShiftParams(StageParams):
    """`shifts:` entry of the metashift stage."""

    stage: Literal["metashift"]
    splits: list[Literal["train", "test"]] = Field(
        default_factory=lambda: list(SPLITS),
        min_length=1,
        description="splits to write; each becomes a config",
    )

    @field_validator("splits")
    @classmethod
    def _unique(cls, splits: list[str]) -> list[str]:
        if len(set(splits)) != len(splits):
            raise ValueError(f"splits must not repeat, got {splits}")
        return splits


def split_of(batch: Batch, i: int) -> str | None:
    """The split a sample belongs to: its meta, else the `<split>-` prefix of its source key."""
    split = (batch.meta[i] or {}).get("split")
    if split in SPLITS:
        return split
    prefix = batch.source_keys[i].split("-", 1)[0]
    return prefix if prefix in SPLITS else None


class MetaShiftStage(Stage):
    name = "metashift"
    version = "1"
    Params = MetaShiftParams

    def variants(self) -> list[Variant]:
        return [
            Variant(stage=self.name, config=split, params={"split": split}) for split in self.params.splits
        ]

    def apply(self, batch: Batch, variant: Variant) -> Batch:
        """Pixels and meta pass through untouched; samples of the other split leave the batch.

        A sample whose split is unknown stays, so nothing is silently lost."""
        keep = [i for i in range(len(batch)) if split_of(batch, i) in (variant.params["split"], None)]
        return batch.select(keep)


STAGE = MetaShiftStage
