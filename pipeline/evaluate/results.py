"""Results of one model on one release: predictions joined to the sample table,
`results/<model>.json` (metrics, model and release identity, throughput) and
`results/<model>.predictions.parquet` (one row per sample, every stored prediction),
from which any metric can be recomputed without rerunning the model."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from pipeline.evaluate.metrics.common import target_index
from pipeline.writers.files import ReleaseStore

RESULTS_DIR = "results"
RESULTS_SCHEMA = "shiftforge/results/1"


def join_predictions(samples: list[dict[str, Any]], predictions: list[dict[str, Any]],
                     model_labels: list[str]) -> list[dict[str, Any]]:
    """Sample rows with their predictions and `target`; samples without predictions are left out."""
    by_key = {(p["config"], p["key"]): p for p in predictions}
    rows = []
    for sample in samples:
        prediction = by_key.get((sample["config"], sample["key"]))
        if prediction is None:
            continue
        rows.append({**sample, **prediction,
                     "target": target_index(sample["label"], sample["meta"], model_labels)})
    return rows


def predictions_parquet(rows: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, list] = {}
    skip = {"meta"}
    for name in rows[0] if rows else ["key"]:
        if name in skip:
            continue
        values = [r.get(name) for r in rows]
        columns[name] = [json.dumps(v, sort_keys=True) for v in values] if name in ("shift", "label") else values
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink, compression="zstd")
    return sink.getvalue()


def write_results(out: Path, name: str, document: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    store = ReleaseStore(out)
    store.write_atomic(f"{RESULTS_DIR}/{name}.predictions.parquet", predictions_parquet(rows))
    path = f"{RESULTS_DIR}/{name}.json"
    store.write_atomic(path, (json.dumps(document, indent=1, sort_keys=True, default=_jsonable) + "\n").encode())
    return out / path


def _jsonable(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def load_baseline(path: str | Path) -> dict[str, Any]:
    """The metrics of a results file written by `evaluate` (ValueError if it is not one)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"baseline {path} does not exist")
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"baseline {path} is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("schema") != RESULTS_SCHEMA:
        raise ValueError(f"baseline {path} is not a results file of `shiftforge evaluate` "
                         f"(expected schema {RESULTS_SCHEMA!r})")
    return document


def read_results(release: str | Path) -> list[dict[str, Any]]:
    """Every results/<model>.json of a release or evaluation folder, by model name."""
    folder = Path(release) / RESULTS_DIR
    if not folder.is_dir():
        return []
    documents = []
    for path in sorted(folder.glob("*.json")):
        try:
            document = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(document, dict) and document.get("schema") == RESULTS_SCHEMA:
            documents.append(document)
    return documents
