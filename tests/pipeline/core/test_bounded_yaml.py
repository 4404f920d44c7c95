"""Manifests that would exhaust memory or hang fail at load, in well under 2 s, with one line."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.core.bounded_yaml import MAX_DEPTH, MAX_MANIFEST_BYTES, MAX_NODES, BoundExceeded, expanded_size
from pipeline.core.manifest import ManifestError, load_manifest

ROOT = Path(__file__).resolve().parents[3]


def alias_bomb(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + f"\nname: *l{levels - 1}\n"


def tiny_text(tiny_release) -> str:
    return yaml.safe_dump(tiny_release)


CASES = {
    "alias bomb": (lambda t: alias_bomb().encode(), f"more than {MAX_NODES} values once its aliases are expanded"),
    "self alias": (lambda t: b"name: &a [*a]\n", "an alias refers to a node that contains it (line 1)"),
    "deep nesting": (lambda t: b"name: " + b"[" * 50_000 + b"]" * 50_000 + b"\n",
                     f"nested deeper than {MAX_DEPTH} levels (line 1)"),
    "latin-1": (lambda t: b"name: caf\xe9\n", "not UTF-8: byte 0xe9 at offset 9 (line 1); save it as UTF-8"),
    "utf-16": (lambda t: t.encode("utf-16"), "encoded as UTF-16; save it as UTF-8"),
    "50 MB": (lambda t: t.encode() + b"#" + b"x" * (50 << 20), f"larger than {MAX_MANIFEST_BYTES} bytes"),
    "duplicate key": (lambda t: t.encode() + b"seed: 8\n", "duplicate key 'seed' (line "),
    "count 1e12": (lambda t: t.replace("count: 5", "count: 1e12").encode(),
                   'invalid release manifest: source.samples.count: Input should be a valid integer (got "1e12")'),
    "count 10**12": (lambda t: t.replace("count: 5", "count: 1000000000000").encode(),
                     "source.samples.count: Input should be less than or equal to 1000000"),
    "huge image_size": (lambda t: t.replace("- 48\n  - 48", "- 100000\n  - 48").encode(),
                        "output.image_size.0: Input should be less than or equal to 8192"),
    "true severity": (lambda t: t.replace("severities:\n  - 1", "severities:\n  - true").encode(),
                      "shifts.0.corruptions.severities.0: Input should be a valid integer (got true)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bounded_load(tmp_path, tiny_release, case):
    make, expected = CASES[case]
    text = tiny_text(tiny_release)
    path = tmp_path / "m.yaml"
    path.write_bytes(make(text))
    started = time.perf_counter()
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert time.perf_counter() - started < 2
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert expected in message


def test_the_bounded_loader_reads_ordinary_manifests_unchanged(tmp_path, tiny_release):
    for manifest in sorted((ROOT / "manifests").glob("*.yaml")):
        assert load_manifest(manifest).name
    path = tmp_path / "m.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + tiny_text(tiny_release).encode())   # a UTF-8 byte-order mark is fine
    assert load_manifest(path).output.image_size == (48, 48)


def test_expansion_bounds_are_exact():
    node = yaml.compose('a: &a [1, 2, 3]\nb: [*a, *a]\n')
    # mapping + 2 keys + a (4) + b (1 + 2 * 4)
    assert expanded_size(node) == 1 + 2 + 4 + 9
    with pytest.raises(BoundExceeded):
        expanded_size(node, limit=15)
    assert expanded_size(node, limit=16) == 16
    deep = yaml.compose("a: &a [[[1]]]\nb: [[*a]]\n")          # b expands to 6 levels below the mapping
    assert expanded_size(deep, max_depth=7)
    with pytest.raises(BoundExceeded, match="once its aliases are expanded"):
        expanded_size(deep, max_depth=6)


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "m.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ManifestError, match="not a regular file"):
        load_manifest(fifo)


def test_cli_alias_bomb_exits_2_with_one_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    result = subprocess.run([sys.executable, "-m", "pipeline", "plan", str(path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {path}: more than {MAX_NODES} values once its aliases "
                                                  "are expanded"]
