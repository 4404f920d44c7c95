"""Label consistency: an oracle classifier must still recognise the label on
the shifted image (for non-generative shifts, where the label is given).

Either a local image classifier (`AutoModelForImageClassification`; an integer
label is its class index, a class name is matched against `id2label`, whose
entries may list synonyms separated by commas) or CLIP zero-shot over
`classes` with the prompt template.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from stages.base import Batch
from stages.filters.base import Filter, MissingInput, Threshold, class_name_of
from stages.filters.clip import ClipEncoder
from stages.filters.embedding import ModelParams, rgb
from stages.filters.models import load_classifier, weight_hashes


class LabelConsistencyParams(ModelParams):
    filter: Literal["label_consistency"]
    mode: Literal["classifier", "clip"] = "classifier"
    classes: list[str] | None = Field(default=None, description="candidate class names (clip mode)")
    template: str = "a photo of a {class}"
    top_k: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _clip_needs_classes(self) -> LabelConsistencyParams:
        if self.mode == "clip" and not self.classes:
            raise ValueError("mode 'clip' needs `classes`, the candidate class names")
        return self


def _normalise(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


class LabelConsistency(Filter):
    name = "label_consistency"
    Params = LabelConsistencyParams
    scores = ("label_consistency", "label_prob")

    def __init__(self, params: LabelConsistencyParams):
        super().__init__(params)
        self.encoder = ClipEncoder(params.model) if params.mode == "clip" else None

    def default_thresholds(self) -> dict[str, Threshold]:
        return {"label_consistency": Threshold(min=1.0)}

    def score(self, batch: Batch) -> dict[str, list[float]]:
        if self.encoder is not None:
            probs, names = self._clip_probabilities(batch), self.params.classes
        else:
            probs, names = self._classifier_probabilities(batch)
        lookup = {}
        for index, entry in enumerate(names):
            for synonym in entry.split(","):
                lookup.setdefault(_normalise(synonym), index)
        expected = np.array([self._expected_index(batch, i, lookup, len(names)) for i in range(len(batch))])
        top = np.argsort(-probs, axis=1, kind="stable")[:, : self.params.top_k]
        hit = (top == expected[:, None]).any(axis=1)
        return {"label_consistency": hit.astype(float).tolist(),
                "label_prob": probs[np.arange(len(batch)), expected].tolist()}

    def _expected_index(self, batch: Batch, i: int, lookup: dict[str, int], n_classes: int) -> int:
        label = batch.labels[i]
        integer = isinstance(label, int) and not isinstance(label, bool)
        if self.encoder is None and integer and 0 <= label < n_classes:
            return label
        name = class_name_of(batch, i)
        if _normalise(name) not in lookup:
            raise MissingInput(f"class {name!r} of sample {batch.keys[i]} is not among the model's classes")
        return lookup[_normalise(name)]

    def _classifier_probabilities(self, batch: Batch) -> tuple[np.ndarray, list[str]]:
        import torch

        model, processor = load_classifier(self.params.model)
        inputs = processor(images=[rgb(im) for im in batch.images], return_tensors="pt")
        with torch.inference_mode():
            logits = model(pixel_values=inputs["pixel_values"].to(model.device)).logits
        names = [str(model.config.id2label[i]) for i in range(logits.shape[1])]
        return torch.softmax(logits.float(), dim=1).cpu().numpy(), names

    def _clip_probabilities(self, batch: Batch) -> np.ndarray:
        prompts = [self.params.template.format(**{"class": c, "shift": ""}) for c in self.params.classes]
        logits = 100.0 * self.encoder.images(batch.images) @ self.encoder.texts(prompts).T
        logits -= logits.max(axis=1, keepdims=True)
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    def weight_hashes(self) -> dict[str, str]:
        return weight_hashes(self.params.model)


FILTERS = [LabelConsistency]
