"""Third-party stages and sources: the tiny extension package in tests/extension_pkg
(installed into the environment by scripts/setup.sh) joins through entry points,
or is named as "module:Class"; a broken one is exit 2 with one line naming it."""

import io
import json
import subprocess
import sys
import tarfile
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stages.registry
from pipeline.cli import main
from pipeline.core import manifest as manifest_module
from pipeline.core.manifest import ManifestError, parse_release, release_model
from pipeline.core.plan import plan_release
from pipeline.sources import available_sources
from stages import available_stages

try:
    import shiftforge_tiny_ext.stage as ext
except ImportError as exc:   # fail, not skip: the extension tests must run wherever the suite runs
    raise ImportError("the test extension is not installed; run scripts/setup.sh "
                      "(pip install -e tests/extension_pkg)") from exc

ROOT = Path(__file__).resolve().parents[3]
REF = "shiftforge_tiny_ext.stage:InvertStage"


def ext_release(**changes) -> dict:
    data = {"name": "ext", "version": "1.0.0", "seed": 3,
            "source": {"kind": "tiny_gradient", "count": 3, "size": 16},
            "shifts": [{"stage": "tiny_invert", "levels": [255, 128]}, {"stage": REF, "levels": [200]}],
            "output": {"samples_per_shard": 2}}
    data.update(changes)
    return data


def expected(i: int, level: int) -> np.ndarray:
    """Independent of the package: item i has pixel (y, x) = (40 i + y + x) mod 256, inverted at level."""
    y, x = np.mgrid[0:16, 0:16]
    clean = (40 * i + y + x) % 256
    return np.repeat(np.clip(level - clean, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def read_png(tar_path: Path, member: str) -> np.ndarray:
    with tarfile.open(tar_path) as tar:
        return np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())))


@pytest.mark.slow
def test_build_with_an_installed_stage_and_source_through_the_cli(tmp_path, write_manifest):
    out = tmp_path / "release"
    result = subprocess.run([sys.executable, "-m", "pipeline", "build", str(write_manifest(ext_release())),
                             "--out", str(out), "--workers", "1", "--no-progress"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "data").iterdir()) == ["tiny_invert-128", "tiny_invert-200",
                                                                 "tiny_invert-255"]
    np.testing.assert_array_equal(read_png(out / "data/tiny_invert-128/test-00000.tar", "gradient-1.png"),
                                  expected(1, 128))
    np.testing.assert_array_equal(read_png(out / "data/tiny_invert-200/test-00001.tar", "gradient-2.png"),
                                  expected(2, 200))
    prov = json.loads((out / "provenance.json").read_text())
    assert [(s["name"], s["version"], s["params"]["stage"]) for s in prov["stages"]] == [
        ("tiny_invert", "1.0", "tiny_invert"), ("tiny_invert", "1.0", REF)]
    assert prov["manifest"]["source"] == {"kind": "tiny_gradient", "count": 3, "size": 16}


def test_extensions_join_the_registries_and_the_schema():
    assert available_stages()["tiny_invert"] is ext.InvertStage
    assert available_sources()["tiny_gradient"].__module__ == "shiftforge_tiny_ext.source"
    schema = json.dumps(release_model().model_json_schema())
    assert '"tiny_invert"' in schema and '"tiny_gradient"' in schema


def test_extension_params_are_validated_with_the_field_path():
    bad = ext_release(shifts=[{"stage": "tiny_invert", "levels": []}])
    with pytest.raises(ManifestError, match=r"shifts\.0\.tiny_invert\.levels"):
        parse_release(bad)
    with pytest.raises(ManifestError, match=r"shifts\.0\.shiftforge_tiny_ext.stage:InvertStage\.colour"):
        parse_release(ext_release(shifts=[{"stage": REF, "colour": 1}]))


def test_version_and_params_of_an_extension_stage_go_into_fingerprints(monkeypatch):
    def fingerprints(data):
        return {u.shard_id: u.fingerprint for u in plan_release(parse_release(data)).units}

    base = fingerprints(ext_release())
    changed = fingerprints(ext_release(shifts=[{"stage": "tiny_invert", "levels": [255, 128]},
                                               {"stage": REF, "levels": [201]}]))
    assert [k for k in base if base[k] == changed.get(k)] == [
        "tiny_invert-255/test-00000", "tiny_invert-255/test-00001",
        "tiny_invert-128/test-00000", "tiny_invert-128/test-00001"]
    monkeypatch.setattr(ext.InvertStage, "version", "1.1")
    bumped = fingerprints(ext_release())
    assert bumped.keys() == base.keys() and all(bumped[k] != base[k] for k in base)


@pytest.mark.parametrize(("ref", "says"), [
    ("shiftforge_tiny_ext.raising:Stage", "cannot be imported: RuntimeError: tiny extension failed to import"),
    ("shiftforge_tiny_ext.stage:Nope", "shiftforge_tiny_ext.stage has no attribute 'Nope'"),
    ("shiftforge_tiny_ext.broken:NotAStage", "is not a Stage subclass"),
    ("shiftforge_tiny_ext.broken:NoParams", "has no Params model (a StageParams subclass)"),
    ("shiftforge_tiny_ext.broken:NoVersion", "has no string `version`"),
    ("no_such_module_xyz:Stage", "cannot be imported: ModuleNotFoundError"),
    (":Stage", "must look like 'package.module:Class'"),
])
def test_a_broken_class_reference_is_exit_2_with_one_line(tmp_path, write_manifest, capsys, ref, says):
    out = tmp_path / "out"
    path = write_manifest(ext_release(shifts=[{"stage": ref}]))
    assert main(["build", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and f"stage '{ref}'" in err and str(path) in err
    assert not out.exists()


def test_a_broken_source_reference_names_the_source(write_manifest, capsys):
    path = write_manifest(ext_release(source={"kind": "shiftforge_tiny_ext.stage:InvertStage"}))
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "source 'shiftforge_tiny_ext.stage:InvertStage' is not a Source subclass" in err


def test_a_source_named_as_module_class_builds_a_plan():
    data = ext_release(source={"kind": "shiftforge_tiny_ext.source:GradientSource", "count": 5})
    plan = plan_release(parse_release(data))
    assert len(plan.index) == 5 and len(plan.units) == 3 * 3


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Installs a list of stage entry points in place of the environment's."""
    def install(*pairs):
        eps = [EntryPoint(name, value, "shiftforge.stages") for name, value in pairs]
        monkeypatch.setattr(stages.registry, "entry_points",
                            lambda group: eps if group == "shiftforge.stages" else [])
        clear()

    def clear():
        available_stages.cache_clear()
        manifest_module.release_model.cache_clear()

    yield install
    monkeypatch.undo()
    clear()


@pytest.mark.parametrize(("pairs", "says"), [
    ([("tiny_raise", "shiftforge_tiny_ext.raising:Stage")],
     "stage 'tiny_raise' (entry point shiftforge_tiny_ext.raising:Stage in group shiftforge.stages) cannot be "
     "loaded: RuntimeError: tiny extension failed to import"),
    ([("tiny_gone", "shiftforge_tiny_ext.stage:Gone")], "stage 'tiny_gone' (entry point"),
    ([("corruptions", REF)], "shadows the built-in stage 'corruptions'"),
    ([("tiny_other", REF)], "name is 'tiny_invert', but it is registered as 'tiny_other'"),
    ([("tiny_mod", "shiftforge_tiny_ext.stage")], "is not a Stage subclass (got None)"),
    ([("tiny:invert", REF)], "a registered name may not contain ':'"),
    ([("no_params", "shiftforge_tiny_ext.broken:NoParams")], "has no Params model"),
    ([("no_version", "shiftforge_tiny_ext.broken:NoVersion")], "has no string `version`"),
    ([("wrong_tag", "shiftforge_tiny_ext.broken:WrongTag")], "Params.stage must be Literal['wrong_tag']"),
])
def test_a_broken_entry_point_is_exit_2_with_one_line(tmp_path, capsys, fake_entry_points, pairs, says):
    fake_entry_points(*pairs)
    assert main(["schema", "--out", str(tmp_path / "schema")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: stage '") and says in err
    assert not (tmp_path / "schema" / "release.schema.json").exists()


def test_a_module_entry_point_exporting_stage_is_accepted(fake_entry_points, monkeypatch):
    monkeypatch.setattr(ext, "STAGE", ext.InvertStage, raising=False)
    fake_entry_points(("tiny_invert", "shiftforge_tiny_ext.stage"))
    assert available_stages()["tiny_invert"] is ext.InvertStage
