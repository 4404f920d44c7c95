"""croissant.json: Croissant 1.0 (JSON-LD) metadata of a release.

`distribution` lists every shard as a FileObject with its sha256 (from
provenance.json), one FileSet per config of the images inside those tars, and
samples.parquet; `recordSet` describes the per-sample table (one record per
sample, rejected and failed ones included) and the images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.release.card import BENCHMARKS
from pipeline.writers.files import ReleaseStore

CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
# The standard Croissant 1.0 JSON-LD context.
CONTEXT: dict[str, Any] = {
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/", "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"}, "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty", "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract", "field": "cr:field", "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject", "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5",
    "parentField": "cr:parentField", "path": "cr:path", "recordSet": "cr:recordSet",
    "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated", "replace": "cr:replace",
    "samplingRate": "cr:samplingRate", "sc": "https://schema.org/", "separator": "cr:separator",
    "source": "cr:source", "subField": "cr:subField", "transform": "cr:transform",
}
# samples.parquet columns (see pipeline.release.provenance.ROW_SCHEMA) and what they hold.
SAMPLE_FIELDS: list[tuple[str, str, str]] = [
    ("key", "sc:Text", "sample key (the WebDataset __key__)"),
    ("source_key", "sc:Text", "key of the clean source image"),
    ("source_sha256", "sc:Text", "sha256 of the clean source image"),
    ("config", "sc:Text", "shift config (folder data/<config>/)"),
    ("stage", "sc:Text", "shift family"),
    ("shift", "sc:Text", "shift parameters and per-sample details (JSON)"),
    ("seed", "sc:Integer", "per-sample seed"),
    ("label", "sc:Text", "label (JSON)"),
    ("status", "sc:Text", "ok, rejected or error"),
    ("reason", "sc:Text", "why a sample was rejected or failed"),
    ("scores", "sc:Text", "filter scores (JSON)"),
    ("meta", "sc:Text", "source metadata (JSON)"),
    ("split", "sc:Text", "split, when the source defines one"),
    ("shard", "sc:Text", "tar holding the sample (ok samples only)"),
]
IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg"}


def _shard_id(path: str) -> str:
    return "shard/" + path.removeprefix("data/").removesuffix(".tar")


def distribution(provenance: dict[str, Any], parquet_sha256: str | None,
                 encoding: str) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = []
    for shard in provenance.get("shards", []):
        if shard.get("path"):
            files.append({"@type": "cr:FileObject", "@id": _shard_id(shard["path"]), "name": shard["path"],
                          "contentUrl": shard["path"], "contentSize": f"{shard['bytes']} B",
                          "encodingFormat": "application/x-tar", "sha256": shard["sha256"]})
    for config, entry in sorted(provenance.get("configs", {}).items()):
        if entry.get("shards"):
            files.append({"@type": "cr:FileSet", "@id": f"images/{config}", "name": f"images of {config}",
                          "containedIn": [{"@id": _shard_id(path)} for path in entry["shards"]],
                          "encodingFormat": IMAGE_TYPES[encoding], "includes": f"*.{encoding}"})
    if parquet_sha256:
        files.append({"@type": "cr:FileObject", "@id": "samples.parquet", "name": "samples.parquet",
                      "contentUrl": "samples.parquet", "encodingFormat": "application/x-parquet",
                      "sha256": parquet_sha256})
    return files


def record_sets(provenance: dict[str, Any], has_table: bool) -> list[dict[str, Any]]:
    sets: list[dict[str, Any]] = []
    if has_table:
        fields = [{"@type": "cr:Field", "@id": f"samples/{name}", "name": name, "description": text,
                   "dataType": data_type,
                   "source": {"fileObject": {"@id": "samples.parquet"}, "extract": {"column": name}}}
                  for name, data_type, text in SAMPLE_FIELDS]
        sets.append({"@type": "cr:RecordSet", "@id": "samples", "name": "samples",
                     "description": "One record per sample, rejected and failed ones included.",
                     "key": {"@id": "samples/key"}, "field": fields})
    for config, entry in sorted(provenance.get("configs", {}).items()):
        if not entry.get("shards"):
            continue
        file_set = {"fileSet": {"@id": f"images/{config}"}}
        sets.append({"@type": "cr:RecordSet", "@id": config, "name": config,
                     "description": f"Images of shift config {config} ({entry['stage']}, "
                                    f"{json.dumps(entry.get('params', {}), sort_keys=True)}).",
                     "field": [
                         {"@type": "cr:Field", "@id": f"{config}/image", "name": "image",
                          "dataType": "sc:ImageObject",
                          "source": {**file_set, "extract": {"fileProperty": "content"}}},
                         {"@type": "cr:Field", "@id": f"{config}/filename", "name": "filename",
                          "dataType": "sc:Text",
                          "source": {**file_set, "extract": {"fileProperty": "filename"}}},
                     ]})
    return sets


def croissant_document(provenance: dict[str, Any], parquet_sha256: str | None = None) -> dict[str, Any]:
    release = provenance["release"]
    manifest = provenance.get("manifest") or {}
    hub = manifest.get("hub") or {}
    encoding = (manifest.get("output") or {}).get("encoding", "png")
    repo = hub.get("repo")
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "name": release["name"],
        "description": (release.get("description") or "").strip() or f"Shifted test set {release['name']}.",
        "conformsTo": CONFORMS_TO,
        "license": release.get("license") or "other",
        "url": f"https://huggingface.co/datasets/{repo}" if repo else f"urn:shiftforge:{release['name']}",
        "version": release["version"],
        "keywords": sorted({*hub.get("tags", []), "distribution shift"}),
        "distribution": distribution(provenance, parquet_sha256, encoding),
        "recordSet": record_sets(provenance, parquet_sha256 is not None),
    }
    citations = [hub["citation"].strip()] if hub.get("citation") else []
    stages = sorted({entry["stage"] for entry in provenance.get("configs", {}).values()})
    citations += [reference for stage, (_, reference) in BENCHMARKS.items() if stage in stages]
    if citations:
        doc["citeAs"] = "\n".join(dict.fromkeys(citations))
    return doc


def write_croissant(release_dir: str | Path) -> Path | str:
    """(Re)write `<release_dir>/croissant.json` from provenance.json (and samples.parquet);
    returns a Path for a local folder, else the URL."""
    store = ReleaseStore(release_dir)
    provenance = json.loads(store.read_text("provenance.json"))
    parquet_sha = store.sha256("samples.parquet") if store.exists("samples.parquet") else None
    doc = croissant_document(provenance, parquet_sha)
    store.write_atomic("croissant.json", (json.dumps(doc, indent=2) + "\n").encode())
    return Path(store.root, "croissant.json") if store.local else store.url("croissant.json")
