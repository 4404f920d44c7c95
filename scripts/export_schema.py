"""Regenerate the committed JSON Schemas (manifests/schema/) from the code.

Only shiftforge's own stages and sources go in: installed extensions (entry points) are
hidden, so the committed schema is the same on every machine.

    .venv/bin/python scripts/export_schema.py [OUT_DIR]     # default: manifests/schema
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(out: str) -> None:
    import stages.registry

    stages.registry.entry_points = lambda group: []   # before any registry is read
    from pipeline.core.manifest import export_schema
    from pipeline.release.provenance_schema import export_provenance_schema

    Path(out).mkdir(parents=True, exist_ok=True)
    print(export_schema(out))
    print(export_provenance_schema(out))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "manifests" / "schema"))
