"""Every params model of the manifest rejects unknown fields: a typo such as
`severites: [1]` must fail validation, not fall back to the default grid."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel, ValidationError

from pipeline.core.manifest import ManifestError, parse_release, release_model
from pipeline.sources import available_sources
from stages import available_stages


def reachable_models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every pydantic model reachable from `root` through field annotations (unions, lists, dicts)."""
    found: dict[str, type[BaseModel]] = {}
    pending: list[typing.Any] = [root]
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            name = f"{annotation.__module__}.{annotation.__qualname__}"
            if name in found:
                continue
            found[name] = annotation
            pending.extend(field.annotation for field in annotation.model_fields.values())
        else:
            pending.extend(typing.get_args(annotation))
    return found


MODELS = reachable_models(release_model())


def test_the_walk_reaches_every_stage_and_source_model():
    names = set(MODELS.values())
    assert {cls.Params for cls in available_stages().values()} <= names
    assert {cls.Spec for cls in available_sources().values()} <= names
    assert len(MODELS) >= len(available_stages()) + len(available_sources()) + 3   # + Release, output, hub


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_rejects_an_unknown_field(name):
    model = MODELS[name]
    with pytest.raises(ValidationError) as caught:
        model.model_validate({"not_a_field": 1})
    extra = [e for e in caught.value.errors() if e["type"] == "extra_forbidden"]
    assert [e["loc"] for e in extra] == [("not_a_field",)], f"{name} accepts unknown fields"


def _manifest(**changes) -> dict:
    manifest = {"name": "typo", "version": "1", "source": {"kind": "samples"},
                "shifts": [{"stage": "corruptions", "corruptions": ["contrast"]}]}
    manifest.update(changes)
    return manifest


@pytest.mark.parametrize("changes, path", [
    ({"shifts": [{"stage": "corruptions", "corruptions": ["contrast"], "severites": [1]}]}, "shifts.0"),
    ({"shifts": [{"stage": "medical", "catalogue": "chestmnist", "severites": [1]}]}, "shifts.0"),
    ({"hub": {"repo": "org/name", "privat": True}}, "hub.privat"),
    ({"output": {"sample_per_shard": 5}}, "output.sample_per_shard"),
    ({"source": {"kind": "samples", "cuont": 3}}, "source"),
    ({"sed": 3}, "sed"),
])
def test_a_misspelt_field_fails_the_manifest_naming_its_path(changes, path):
    with pytest.raises(ManifestError) as caught:
        parse_release(_manifest(**changes))
    message = str(caught.value)
    assert "Extra inputs are not permitted" in message
    assert path in message
