"""`shiftforge metashift`: bad input exits 2 with one line naming the cause and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from stages.metashift.scene_graphs import MetaShiftError, read_records


def _graph(objects: dict) -> dict:
    return {"width": 4, "height": 4, "objects": objects}


def _scene_graphs() -> dict:
    graphs = {}
    for k in range(60):
        objs = {"a": {"name": "dog", "attributes": ["white"] if k < 30 else []}}
        for j, name in enumerate(["bed", "sofa", "shelf", "desk", "rug", "lamp"]):
            if (k + j) % 3:
                objs[f"o{j}"] = {"name": name, "attributes": []}
        graphs[str(k)] = _graph(objs)
    return graphs


@pytest.fixture()
def good(tmp_path) -> Path:
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(_scene_graphs()))
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"1": {"objects": {}}} trailing', "unexpected text after the closing '}'"),
        ("{} x", "unexpected text after the closing '}'"),
        ('{"1": {"objects": {"a": {"name": "dog", "attributes": "white"}}}}', "'attributes' to be a list of strings"),
        ('{"1": {"objects": {"a": {"name": "dog", "attributes": [["white"]]}}}}', "list of strings"),
    ],
)
def test_reader_refuses_malformed_scene_graphs(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(MetaShiftError, match=message.replace("(", r"\(")):
        list(read_records(path))


def test_reader_refuses_invalid_utf8(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"1": {"objects": {"a": {"name": "d\xffog"}}}}')
    with pytest.raises(MetaShiftError, match="not valid UTF-8"):
        list(read_records(path))
    table = tmp_path / "bad.csv"
    table.write_bytes(b"image_id,objects\n1,d\xffog\n")
    with pytest.raises(MetaShiftError, match="not valid UTF-8"):
        list(read_records(table))
    nested = tmp_path / "nested.csv"
    nested.write_text('image_id,objects\n1,"[[""dog""]]"\n')
    with pytest.raises(MetaShiftError, match="flat JSON list"):
        list(read_records(nested))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--count", "-3"], "--count must be a positive integer, got -3"),
        (["--mix-size", "-1"], "--mix-size must be a positive integer, got -1"),
        (["--mix-size", "0"], "--mix-size must be a positive integer, got 0"),
        (["--test", "attr:white"], "dog(attr:white) is an attribute context, but only object contexts"),
        (["--min-subset-size", "0"], "--min-subset-size: Input should be greater than or equal to 1"),
    ],
)
def test_sweep_bad_arguments_exit_2_with_one_line(good, capsys, argv, message):
    base = {"--test": "bed", "--class": "dog", "--min-subset-size": "5", "--min-subsets-per-class": "2"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    args = ["metashift", "sweep", "--scene-graphs", str(good)] + [x for kv in base.items() for x in kv]
    code, out, err = _run(capsys, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err


def test_sweep_attribute_context_when_enabled(good, capsys):
    args = ["metashift", "sweep", "--scene-graphs", str(good), "--class", "dog", "--test", "attr:white"]
    args += ["--contexts", "object,attribute", "--min-subset-size", "5", "--min-subsets-per-class", "2"]
    code, out, _ = _run(capsys, *args, "--protocol", "subsets")
    assert code == 0 and json.loads(out)["mixes"]


def test_subsets_bad_file_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"1": {"objects": {}}} }')
    out = tmp_path / "out"
    code, _, err = _run(capsys, "metashift", "subsets", "--scene-graphs", str(bad), "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and "after the closing" in err
    assert not out.exists()


def test_subsets_protocols_write_their_distances(good, tmp_path, capsys):
    base = ["metashift", "subsets", "--scene-graphs", str(good), "--min-subset-size", "5"]
    base += ["--min-subsets-per-class", "2"]
    assert _run(capsys, *base, "--out", str(tmp_path / "official"))[0] == 0
    assert _run(capsys, *base, "--out", str(tmp_path / "subsets"), "--protocol", "subsets")[0] == 0
    official = json.loads((tmp_path / "official" / "distances.json").read_text())["dog"]
    per_subset = json.loads((tmp_path / "subsets" / "distances.json").read_text())["dog"]
    graph = json.loads((tmp_path / "official" / "graphs" / "dog.json").read_text())
    assert official["communities"] == [n["community"][4:-1] for n in graph["meta_graph"]["nodes"]]
    assert per_subset["contexts"] == ["bed", "desk", "lamp", "rug", "shelf", "sofa"]
    assert len(per_subset["matrix"]) == 6 and per_subset["matrix"][0][0] == 0.0
    assert "embedding" in json.loads((tmp_path / "subsets" / "graphs" / "dog.json").read_text())["nodes"][0]
    summary = json.loads((tmp_path / "subsets" / "subsets.json").read_text())
    assert summary["protocol"] == "subsets" and summary["attribute_vocabulary"] == "official"
    assert not (tmp_path / "official" / "graphs" / "dog.png").exists()  # pictures only with --png


def test_subsets_checks_every_class_before_writing(good, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["metashift", "subsets", "--scene-graphs", str(good), "--out", str(out)]
    args += ["--min-subset-size", "5", "--min-subsets-per-class", "2", "--classes", "dog,sofas"]
    code, _, err = _run(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and "unknown class 'sofas'; did you mean 'sofa'" in err
    assert not out.exists()  # dog, before it, was not written either
    code, _, err = _run(capsys, *args[:-1], "dog", "--workers", "0")
    assert code == 2 and err.strip() == "error: --workers must be a positive integer, got 0" and not out.exists()


def test_subsets_failure_in_a_worker_exits_2_with_its_message(tmp_path, capsys, monkeypatch):
    from pipeline.cli import metashift as cli
    from stages.metashift import distances

    def fails(catalog, cls, *args, **kwargs):
        raise MetaShiftError(f"{cls}: cannot be split")

    graphs = {str(k): _graph({f"o{j}": {"name": f"n{(k + j) % 7}"} for j in range(4)}) for k in range(80)}
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(graphs))
    monkeypatch.setattr(cli, "_GROUP_CLASSES", 1)  # several groups: the workers run
    monkeypatch.setattr(distances, "community_graph", fails)  # forked workers see it too
    args = ["metashift", "subsets", "--scene-graphs", str(path), "--out", str(tmp_path / "out"), "--workers", "2"]
    code, out, err = _run(capsys, *args, "--min-subset-size", "5", "--min-subsets-per-class", "2")
    assert code == 2 and out == "" and err.count("\n") == 1 and "n0: cannot be split" in err
