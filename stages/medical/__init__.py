"""Medical corruptions (MedMNIST-C): each MedMNIST dataset's catalogue of
corruptions at five severities, on MedMNIST images or any folder of images
of the same modality.

A manifest entry picks a catalogue by dataset (`catalogue: dermamnist`) or
by imaging modality (`modality: dermoscopy`), optionally a subset of its
corruptions and severities. The grid is corruption × severity; output
configs are named `<dataset>-<corruption>-s<severity>`.

Inputs are brought to what the catalogue expects, with a note in the
sample's shift record: the shorter side is scaled to `size` (the published
severities are tuned for 224 px), grey images are stacked to RGB for the
colour datasets (path, blood, derma, retina) and colour images are reduced
to luma for the grey ones. Grey output stays single-channel (HxWx1).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator

from stages.base import Batch, Stage, StageParams, Variant
from stages.medical.catalogue import (
    CATALOGUES,
    MODALITIES,
    NATIVE_SIZE,
    RGB_DATASETS,
    SEVERITIES,
    catalogue,
    level,
)
from stages.medical.ops import luma
from stages.medical.transforms import transform

DatasetName = Literal[tuple(CATALOGUES)]  # type: ignore[valid-type]
ModalityName = Literal[tuple(MODALITIES)]  # type: ignore[valid-type]


class MedicalParams(StageParams):
    stage: Literal["medical"]
    catalogue: DatasetName | None = Field(
        default=None, description="MedMNIST dataset whose corruption catalogue to apply")
    modality: ModalityName | None = Field(
        default=None, description="imaging modality; picks the catalogue of the matching MedMNIST dataset")
    corruptions: list[str] | None = Field(
        default=None, min_length=1, description="subset of the catalogue's corruptions (default: all)")
    severities: list[Literal[1, 2, 3, 4, 5]] = Field(default=list(SEVERITIES), min_length=1)
    size: int | None = Field(
        default=NATIVE_SIZE, ge=8,
        description="scale images so their shorter side is this many px first; null keeps their size")

    @field_validator("severities")
    @classmethod
    def _unique_severities(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"severities must not repeat, got {value}")
        return sorted(value)

    @model_validator(mode="after")
    def _known_corruptions(self) -> MedicalParams:
        if (self.catalogue is None) == (self.modality is None):
            raise ValueError("give exactly one of catalogue (a MedMNIST dataset) or modality")
        table = catalogue(self.dataset)
        unknown = [name for name in self.corruptions or [] if name not in table]
        if unknown:
            raise ValueError(f"{self.dataset} has no corruption {', '.join(map(repr, unknown))}; "
                             f"expected any of {', '.join(table)}")
        return self

    @property
    def dataset(self) -> str:
        return self.catalogue or MODALITIES[self.modality]

    def selected_corruptions(self) -> list[str]:
        return list(self.corruptions or catalogue(self.dataset))


def prepare(image: np.ndarray, dataset: str, size: int | None) -> tuple[np.ndarray, list[str]]:
    """The image as `dataset`'s catalogue expects it (uint8 HxWxC), and notes on what changed."""
    notes: list[str] = []
    x = image[..., None] if image.ndim == 2 else image
    if x.ndim != 3 or x.shape[2] not in (1, 3, 4) or x.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxW, HxWx1, HxWx3 or HxWx4 image, got {x.dtype} {image.shape}")
    if x.shape[2] == 4:
        x = x[..., :3]
        notes.append("alpha channel dropped")
    if dataset in RGB_DATASETS and x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
        notes.append(f"grey stacked to RGB ({dataset} is colour)")
    elif dataset not in RGB_DATASETS and x.shape[2] == 3:
        x = luma(x)[..., None]
        notes.append(f"RGB reduced to luma ({dataset} is single-channel)")
    h, w = x.shape[:2]
    if size is not None and min(h, w) != size:
        new_h, new_w = max(1, round(h * size / min(h, w))), max(1, round(w * size / min(h, w)))
        interpolation = cv2.INTER_AREA if new_h < h else cv2.INTER_LINEAR
        x = cv2.resize(x, (new_w, new_h), interpolation=interpolation).reshape(new_h, new_w, x.shape[2])
        notes.append(f"resized {h}x{w} -> {new_h}x{new_w} (severities are tuned for {NATIVE_SIZE} px)")
    return np.ascontiguousarray(x), notes


def corrupt(image: np.ndarray, dataset: str = "dermamnist", name: str = "black_corner", severity: int = 3,
            seed: int = 0, size: int | None = None) -> np.ndarray:
    """One MedMNIST-C corruption of one uint8 image (HxW, HxWx1 or HxWx3).

    Grey datasets return single-channel images, shaped like the input (HxW
    stays HxW); colour datasets return HxWx3. `size` rescales first (see
    `prepare`); by default the image is corrupted at its own size.
    """
    value = level(dataset, name, severity)
    x, _ = prepare(np.asarray(image), dataset, size)
    out, _ = transform(x, name, value, severity, np.random.default_rng(seed))
    return out[..., 0] if np.asarray(image).ndim == 2 and out.shape[2] == 1 else out


class MedicalStage(Stage):
    name = "medical"
    # 1.1: shot noise, stains, bubbles and characters draw in a new order
    # 1.2: noise on grey images is drawn on three channels and reduced to luma, as released
    version = "1.2.0"
    Params = MedicalParams

    def variants(self) -> list[Variant]:
        p: MedicalParams = self.params
        return [
            Variant(stage=self.name, config=f"{p.dataset}-{corruption}-s{severity}", params={
                "dataset": p.dataset, "corruption": corruption, "severity": severity,
                "value": level(p.dataset, corruption, severity), "size": p.size,
            })
            for corruption in p.selected_corruptions() for severity in p.severities
        ]

    def apply(self, batch: Batch, variant: Variant) -> Batch:
        dataset, corruption, severity = (variant.params[k] for k in ("dataset", "corruption", "severity"))
        value = level(dataset, corruption, severity)
        for i in batch.ok_indices():
            if batch.images[i] is None:
                batch.fail(i, f"medical {variant.config}: the sample has no pixels")
                continue
            try:
                x, notes = prepare(batch.images[i], dataset, self.params.size)
                out, details = transform(x, corruption, value, severity, batch.rng(i))
            except (ValueError, cv2.error) as exc:
                batch.fail(i, f"medical {variant.config}: {exc}")
                continue
            batch.images[i] = out
            batch.shift[i] = {**batch.shift[i], **details, **({"notes": notes} if notes else {})}
        return batch


STAGE = MedicalStage

__all__ = ["CATALOGUES", "MODALITIES", "STAGE", "MedicalParams", "MedicalStage", "corrupt", "prepare"]
