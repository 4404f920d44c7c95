"""The dataset card (README.md) of a release, generated from provenance.json.

The YAML header is what the Hugging Face Hub reads: license, pretty name,
task categories, size category, source datasets, tags, and `configs` mapping
each shift config to its WebDataset shards so `datasets.load_dataset(repo_or_folder,
config)` works. Configs whose samples carry a `meta.split` (e.g. MetaShift
train/test) get one data_files entry per split when every shard holds a
single split. The Markdown body is for people: what each shift is, its
parameters, counts, filter acceptance, provenance and how to cite.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.writers.files import ReleaseStore

SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]

# The benchmark each stage reproduces, for the "how to cite" section.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "corruptions": ("ImageNet-C", "D. Hendrycks and T. Dietterich. Benchmarking Neural Network Robustness to "
                    "Common Corruptions and Perturbations. ICLR 2019."),
    "medical": ("MedMNIST-C", "F. Di Salvo, S. Doerrich and C. Ledig. MedMNIST-C: Comprehensive benchmark "
                "and improved classifier robustness by simulating realistic image corruptions. 2024."),
    "nuisance": ("CNS-Bench", "CNS-Bench: Benchmarking Image Classifier Robustness Under Continuous Nuisance "
                 "Shifts. ICCV 2025."),
    "styles": ("COCO-O", "X. Mao et al. COCO-O: A Benchmark for Object Detectors under Natural Distribution "
               "Shifts. ICCV 2023."),
    "metashift": ("MetaShift", "W. Liang and J. Zou. MetaShift: A Dataset of Datasets for Evaluating "
                  "Contextual Distribution Shifts and Training Conflicts. ICLR 2022."),
    "adversarial": ("RAID", "RAID: A Dataset for Testing the Adversarial Robustness of AI-Generated Image "
                    "Detectors. 2025."),
}
BENCHMARKS["generative"] = BENCHMARKS["nuisance"]


def size_category(n: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if n < limit), "n>1B")


def split_name(value: Any) -> str:
    """A split name the Hub accepts (word characters and dots)."""
    return re.sub(r"\W+", "_", str(value)).strip("_") or "test"


def shard_splits(release_dir: str | Path, provenance: dict[str, Any]) -> dict[str, set[str]]:
    """Shard path -> the splits of its ok samples, from samples.parquet (empty when unknown)."""
    store = ReleaseStore(release_dir)
    if not store.exists("samples.parquet"):
        return {}
    table = store.read_table("samples.parquet")
    if "split" not in table.column_names or "shard" not in table.column_names:
        return {}
    by_id = {s["shard_id"]: s["path"] for s in provenance.get("shards", []) if s.get("path")}
    splits: dict[str, set[str]] = {}
    rows = table.select(["shard", "split", "status"]).to_pylist()
    for row in rows:
        if row["status"] == "ok" and row["shard"] and row["split"] is not None:
            path = by_id.get(row["shard"], row["shard"])
            splits.setdefault(path, set()).add(split_name(row["split"]))
    return splits


def config_data_files(config: str, shards: list[str], splits: dict[str, set[str]]) -> list[dict[str, Any]]:
    """One `test` split over the config's folder, or one entry per split when each shard holds one."""
    # shards with no ok sample (e.g. the other split's share of a split stage) carry no split
    holding = [(path, splits[path]) for path in shards if splits.get(path)]
    if holding and all(len(s) == 1 for _, s in holding) and {next(iter(s)) for _, s in holding} != {"test"}:
        per_split: dict[str, list[str]] = {}
        for path, names in holding:
            per_split.setdefault(next(iter(names)), []).append(path)
        return [{"split": name, "path": sorted(paths)} for name, paths in sorted(per_split.items())]
    return [{"split": "test", "path": f"data/{config}/*.tar"}]


def card_metadata(provenance: dict[str, Any], splits: dict[str, set[str]]) -> dict[str, Any]:
    release = provenance["release"]
    hub = (provenance.get("manifest") or {}).get("hub") or {}
    counts = provenance.get("counts", {})
    configs = [{"config_name": name, "data_files": config_data_files(name, entry.get("shards", []), splits)}
               for name, entry in sorted(provenance.get("configs", {}).items()) if entry.get("shards")]
    metadata: dict[str, Any] = {
        "license": release.get("license") or "other",
        "pretty_name": hub.get("pretty_name") or release["name"],
        "task_categories": list(hub.get("task_categories") or ["image-classification"]),
        "size_categories": [size_category(int(counts.get("ok", 0)))],
        "source_datasets": list(hub.get("source_datasets") or ["original"]),
        "tags": sorted({*hub.get("tags", []), "shiftforge", "webdataset"}),
        "configs": configs,
    }
    return metadata


def render_card(provenance: dict[str, Any], splits: dict[str, set[str]] | None = None,
                results: list[dict[str, Any]] | None = None) -> str:
    from pipeline.evaluate.summary import results_markdown

    metadata = card_metadata(provenance, splits or {})
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True, width=1000)
    body = "\n".join([*_overview(provenance, metadata), *_shift_table(provenance), *_filters(provenance),
                      *results_markdown(results or []), *_provenance_summary(provenance), *_citation(provenance)])
    return f"---\n{header}---\n\n{body}\n"


def write_dataset_card(release_dir: str | Path) -> Path | str:
    """(Re)write `<release_dir>/README.md` from its provenance.json and samples.parquet
    (a Path for a local folder, else the URL)."""
    store = ReleaseStore(release_dir)
    provenance = json.loads(store.read_text("provenance.json"))
    from pipeline.evaluate.results import read_results

    results = read_results(store.root) if store.local else []
    text = render_card(provenance, shard_splits(release_dir, provenance), results)
    store.write_atomic("README.md", text.encode())
    return Path(store.root, "README.md") if store.local else store.url("README.md")


# -- human-readable sections -------------------------------------------------------------------
def _overview(provenance: dict[str, Any], metadata: dict[str, Any]) -> list[str]:
    release = provenance["release"]
    counts = provenance.get("counts", {})
    first = metadata["configs"][0]["config_name"] if metadata["configs"] else "CONFIG"
    repo = ((provenance.get("manifest") or {}).get("hub") or {}).get("repo") or "ORG/NAME"
    return [
        f"# {metadata['pretty_name']}", "",
        (release.get("description") or "").strip() or "A shifted test set for robustness evaluation.", "",
        f"Release `{release['name']}` version `{release['version']}`, "
        f"revision {provenance.get('revision', 1)}: "
        f"{counts.get('ok', 0)} samples in {len(metadata['configs'])} shift configs "
        f"({counts.get('rejected', 0)} rejected by filters, {counts.get('error', 0)} errors, "
        f"{counts.get('total', 0)} attempted).", "",
        "Each config is a folder of WebDataset shards `data/<config>/*.tar`; every sample holds the image "
        "(`.png`/`.jpg`), its provenance (`.json`: source image and sha256, shift and parameters, seed, "
        "filter scores) and, when labelled, `.cls`. `samples.parquet` lists every sample including rejected "
        "and failed ones, with the reason.", "",
        "```python", "from datasets import load_dataset", "",
        f'ds = load_dataset("{repo}", "{first}", split="test")', "```", "",
    ]


def _stage_summary(stage: str) -> str:
    try:
        from stages import get_stage

        doc = get_stage(stage).__doc__ or ""
    except (KeyError, ImportError):
        return ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _shift_table(provenance: dict[str, Any]) -> list[str]:
    configs = provenance.get("configs", {})
    stages = sorted({entry["stage"] for entry in configs.values()})
    lines = ["## Shifts", ""]
    for stage in stages:
        benchmark = BENCHMARKS.get(stage, ("", ""))[0]
        summary = _stage_summary(stage)
        named = f"{stage} ({benchmark})" if benchmark else stage
        lines.append(f"- **{named}**{f': {summary}' if summary else ''}")
    lines += ["", "| config | stage | parameters | ok | rejected | error | shards |",
              "|---|---|---|---:|---:|---:|---:|"]
    for name, entry in sorted(configs.items()):
        params = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(entry.get("params", {}).items()))
        c = entry.get("counts", {})
        lines.append(f"| `{name}` | {entry['stage']} | {params.replace('|', '/')} | {c.get('ok', 0)} | "
                     f"{c.get('rejected', 0)} | {c.get('error', 0)} | {len(entry.get('shards', []))} |")
    return [*lines, ""]


def _filters(provenance: dict[str, Any]) -> list[str]:
    filters = (provenance.get("manifest") or {}).get("filters")
    counts = provenance.get("counts", {})
    judged = counts.get("ok", 0) + counts.get("rejected", 0)
    lines = ["## Filters", ""]
    if not filters:
        return [*lines, "No filters: every generated sample that did not fail is included.", ""]
    lines.append(f"Filters (from the manifest): `{json.dumps(filters, sort_keys=True)}`.")
    if judged:
        lines.append(f"Overall acceptance: {counts.get('ok', 0)}/{judged} "
                     f"({100 * counts.get('ok', 0) / judged:.1f}%). Per config:")
        lines.append("")
        for name, entry in sorted(provenance.get("configs", {}).items()):
            c = entry.get("counts", {})
            n = c.get("ok", 0) + c.get("rejected", 0)
            rate = f"{100 * c.get('ok', 0) / n:.1f}%" if n else "n/a"
            lines.append(f"- `{name}`: {c.get('ok', 0)}/{n} accepted ({rate})")
    return [*lines, ""]


def _provenance_summary(provenance: dict[str, Any]) -> list[str]:
    source = provenance.get("source", {})
    code = provenance.get("code", {})
    lines = ["## Provenance", "",
             f"- source: `{json.dumps(source.get('describe', {}), sort_keys=True)}`, "
             f"{source.get('items', '?')} items, index sha256 `{source.get('index_sha256', '?')}`",
             f"- manifest sha256 `{provenance.get('manifest_sha256', '?')}`, release seed "
             f"{provenance['release'].get('seed', '?')}",
             f"- code: shiftforge {code.get('shiftforge', '?')} (git {code.get('git_commit') or 'unknown'}), "
             f"Python {code.get('python', '?')}"]
    for stage in provenance.get("stages", []):
        weights = ", ".join(f"{name} sha256 `{sha[:16]}`"
                            for name, sha in sorted(stage.get("weights", {}).items()))
        lines.append(f"- stage `{stage.get('name')}` version {stage.get('version')}"
                     f"{f'; weights: {weights}' if weights else ''}")
    lines.append("- full details: `provenance.json` (release), `samples.parquet` and each sample's `.json`.")
    return [*lines, ""]


def _citation(provenance: dict[str, Any]) -> list[str]:
    hub = (provenance.get("manifest") or {}).get("hub") or {}
    stages = sorted({entry["stage"] for entry in provenance.get("configs", {}).values()})
    lines = ["## How to cite", ""]
    if hub.get("citation"):
        lines += ["```", hub["citation"].strip(), "```", ""]
    cited = [BENCHMARKS[s] for s in stages if s in BENCHMARKS]
    if cited:
        lines.append("This release reproduces shifts from:")
        lines += [f"- {name}: {reference}" for name, reference in dict(cited).items()]
        lines.append("")
    lines.append("Please also cite the source dataset(s) the clean images come from.")
    return lines
