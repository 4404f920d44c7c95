import json

import pytest

from pipeline.core.manifest import ManifestError, export_schema, load_manifest, parse_release


def test_valid_manifest_round_trips(tiny_release):
    release = parse_release(tiny_release)
    assert release.source.kind == "samples"
    assert release.shifts[0].severities == [1, 5]
    assert release.output.samples_per_shard == 2


def test_bad_severity_names_the_field_path(tiny_release):
    tiny_release["shifts"][0]["severities"] = [1, 7]
    with pytest.raises(ManifestError) as err:
        parse_release(tiny_release)
    message = str(err.value)
    assert "shifts.0.corruptions.severities.1" in message
    assert "less than or equal to 5" in message


def test_unknown_field_rejected(tiny_release):
    tiny_release["output"]["samples_per_shrd"] = 3
    with pytest.raises(ManifestError, match=r"output.samples_per_shrd: Extra inputs are not permitted"):
        parse_release(tiny_release)


def test_unknown_stage_lists_choices(tiny_release):
    tiny_release["shifts"][0]["stage"] = "blurz"
    with pytest.raises(ManifestError, match=r"shifts.0.*corruptions"):
        parse_release(tiny_release)


def test_zarr_requires_image_size(tiny_release):
    del tiny_release["output"]["image_size"]
    with pytest.raises(ManifestError, match="image_size"):
        parse_release(tiny_release)


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        load_manifest(path)


def test_missing_file_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(tmp_path / "nope.yaml")


def test_schema_export_covers_stages(tmp_path):
    schema = json.loads(export_schema(tmp_path).read_text())
    text = json.dumps(schema)
    assert "corruptions" in text and "samples_per_shard" in text
    assert schema["additionalProperties"] is False


def test_lossless_stage_refuses_jpeg_output(tmp_path):
    import yaml

    from pipeline.core.manifest import ROOT_MANIFESTS

    data = yaml.safe_load((ROOT_MANIFESTS / "adversarial.yaml").read_text())
    parse_release(data)  # the shipped manifest is valid as is
    data.setdefault("output", {})["encoding"] = "jpg"
    with pytest.raises(ManifestError, match=r"output.encoding: shifts.0 \(adversarial\) needs lossless"):
        parse_release(data)


def test_every_shipped_manifest_validates():
    from pipeline.core.manifest import ROOT_MANIFESTS

    names = sorted(p.name for p in ROOT_MANIFESTS.glob("*.yaml"))
    assert {"demo.yaml", "medmnist-c.yaml", "cns.yaml", "adversarial.yaml", "metashift.yaml"} <= set(names)
    for name in names:
        load_manifest(ROOT_MANIFESTS / name)


def test_class_name_filter_on_an_unlabelled_source_is_refused(tiny_release):
    tiny_release["filters"] = {"chain": [{"filter": "clip_class", "model": "models/clip"}],
                               "thresholds": {"clip_class": 20.0}}
    with pytest.raises(ManifestError, match=r"clip_class need a class name per sample, but source kind 'samples'"):
        parse_release(tiny_release)


def test_missing_source_folder_is_bad_input(tmp_path, tiny_release):
    from pipeline.core.plan import plan_release

    tiny_release["source"] = {"kind": "folder", "path": str(tmp_path / "nowhere")}
    with pytest.raises(ManifestError, match="source: folder source: .*nowhere is not a folder"):
        plan_release(parse_release(tiny_release))
