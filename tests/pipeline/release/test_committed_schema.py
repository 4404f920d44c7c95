"""The JSON Schemas committed in manifests/schema/ are what the code exports (editors and CI
validate manifests against them, so a stale one accepts or refuses the wrong manifests)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name", ["release.schema.json", "provenance.schema.json"])
def test_committed_schema_is_current(tmp_path, name):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "export_schema.py"), str(tmp_path)], check=True,
                   cwd=ROOT, capture_output=True)
    exported = (tmp_path / name).read_text(encoding="utf-8")
    assert '"tiny_invert"' not in exported       # installed extensions stay out of the committed schema
    assert exported == (ROOT / "manifests" / "schema" / name).read_text(encoding="utf-8"), (
        f"manifests/schema/{name} is stale: run .venv/bin/python scripts/export_schema.py")
