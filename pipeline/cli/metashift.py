"""`shiftforge metashift subsets | sweep | report`: MetaShift curation from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stages.base import UsageError

_EPILOG = (
    "Metadata: a GQA / Visual Genome *_sceneGraphs.json (streamed), or a .csv/.parquet table with "
    "columns image_id, objects[, attributes as object:attribute]."
)


def add_commands(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "metashift",
        help="MetaShift: class(context) subsets, meta-graphs, split distances",
        description="Curate natural distribution shifts from scene-graph metadata.",
    )
    commands = parser.add_subparsers(dest="metashift_command", metavar="SUBCOMMAND", required=True)

    p = commands.add_parser(
        "subsets",
        help="write subsets, per-class meta-graphs (JSON, PNG on request) and distances",
        description="Find every class(context) subset that passes the thresholds and write "
        "OUT/subsets.json, OUT/distances.json and OUT/graphs/<class>.json (and .png with --png).",
        epilog=_EPILOG,
    )
    _metadata_args(p)
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument(
        "--classes", default=None, help="comma-separated classes to export (default: every kept class)"
    )
    p.add_argument("--png", action="store_true", help="also draw graphs/<class>.png (slow for many classes)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that share the classes, on Linux (default: the CPUs available, at most 8); "
        "the output does not depend on it",
    )
    _protocol_arg(p)
    p.set_defaults(func=cmd_subsets)

    p = commands.add_parser(
        "sweep",
        help="training mixes at increasing distance d from one test subset",
        description="Print, as JSON, COUNT training mixes of MIX_SIZE contexts whose "
        "distance d to the test subset CLASS(TEST) rises.",
        epilog=_EPILOG,
    )
    _metadata_args(p)
    p.add_argument("--class", dest="cls", required=True, help="class name, e.g. dog")
    p.add_argument("--test", required=True, help="test context, e.g. shelf")
    p.add_argument("--mix-size", type=int, default=2, help="contexts per training mix (default: 2)")
    p.add_argument("--count", type=int, default=4, help="number of mixes (default: 4)")
    _protocol_arg(p)
    p.set_defaults(func=cmd_sweep)

    p = commands.add_parser(
        "report",
        help="print a manifest's split counts and train/test distances",
        description="Compute the split of a manifest whose source is kind: scene_graph "
        "and print its report (counts, d of every train/test pair) as JSON.",
    )
    p.add_argument("manifest", help="release manifest YAML with source.kind: scene_graph")
    p.set_defaults(func=cmd_report)


def _protocol_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--protocol",
        choices=["official", "subsets"],
        default="official",
        help="official (default): distances between merged communities on their meta-graph "
        "(spectral_layout); subsets: distances between subsets on the per-subset graph",
    )


def _metadata_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scene-graphs", required=True, help="scene-graph JSON or CSV/Parquet table")
    p.add_argument(
        "--contexts",
        default="object",
        help="context kinds: object, attribute or object,attribute (default: object)",
    )
    p.add_argument(
        "--attribute-vocabulary",
        choices=["official", "any"],
        default="official",
        help="attribute contexts from the official MetaShift attribute ontology (default) or any attribute",
    )
    p.add_argument("--min-subset-size", type=int, default=25, help="images a subset needs (default: 25)")
    p.add_argument(
        "--min-subsets-per-class",
        type=int,
        default=6,
        help="kept subsets a class needs (default: 6, i.e. more than 5)",
    )


def _catalog(args: argparse.Namespace, progress: _Progress | None = None):
    from pydantic import ValidationError

    from stages.metashift.scene_graphs import MetaShiftError
    from stages.metashift.subsets import ContextIndex, SubsetCatalog, Thresholds

    kinds = [k.strip() for k in args.contexts.split(",") if k.strip()]
    if not kinds or set(kinds) - {"object", "attribute"}:
        raise UsageError(f"--contexts takes object and/or attribute, got {args.contexts!r}")
    try:
        thresholds = Thresholds(
            min_subset_size=args.min_subset_size, min_subsets_per_class=args.min_subsets_per_class
        )
        reading = progress.reading(args.scene_graphs) if progress else None
        index = ContextIndex.from_path(args.scene_graphs, "attribute" in kinds, reading)
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise UsageError(f"--{str(problem['loc'][0]).replace('_', '-')}: {problem['msg']}") from None
    except MetaShiftError as exc:
        raise UsageError(str(exc)) from None
    return SubsetCatalog(index, thresholds, kinds, args.attribute_vocabulary)


def export_catalog(
    catalog: Any,
    out: Path,
    classes: list[str] | None = None,
    draw: bool = False,
    protocol: str = "official",
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write subsets.json, distances.json and graphs/<class>.json[|png]; return a summary.

    distances.json holds, per class, the distance matrix of the protocol: between merged
    communities (official) or between subsets (subsets). Every class is checked before
    anything is written. Classes are worked on a group at a time (`SubsetCatalog.groups`),
    by `workers` forked processes when more than one (each writes its classes' graph
    files and returns their JSON entries); both JSON files are written here, class by
    class in the order asked, so the bytes do not depend on `workers`. `progress(done,
    total)` is called after each class."""
    classes = catalog.classes() if classes is None else classes
    groups = catalog.groups(classes, max_classes=_GROUP_CLASSES if workers > 1 else None)
    settings = {
        "thresholds": catalog.thresholds.model_dump(),
        "contexts": list(catalog.kinds),
        "attribute_vocabulary": catalog.attribute_vocabulary,
        "protocol": protocol,
        "images": len(catalog.index.image_ids),
    }
    (out / "graphs").mkdir(parents=True, exist_ok=True)
    global _JOB
    _JOB = _ExportJob(catalog, out, draw, protocol)
    counts: dict[str, int] = {}
    try:
        with (
            _JsonMapWriter(out / "subsets.json", settings, "classes") as subsets,
            _JsonMapWriter(out / "distances.json") as distances,
        ):
            for done in _map_in_order(_export_group, groups, workers):
                for cls, kept_text, distances_text, count in done:
                    subsets.add_json(cls, kept_text)
                    distances.add_json(cls, distances_text)
                    counts[cls] = count
                    if progress is not None:
                        progress(len(counts), len(classes))
    finally:
        _JOB = None
    return {**settings, "classes": counts}


_GROUP_CLASSES = 64  # classes per unit of work when several processes share the classes


class _ExportJob:
    """What every class of an export needs; set before the worker processes fork."""

    def __init__(self, catalog: Any, out: Path, draw: bool, protocol: str):
        self.catalog, self.out, self.draw, self.protocol = catalog, out, draw, protocol
        self.quoted = np.array([json.dumps(i) for i in catalog.index.image_ids], dtype=object)  # ids encoded once


_JOB: _ExportJob | None = None


def _export_group(group: list[str]) -> list[tuple[str, str, str, int]]:
    """Graph files of a group of classes, and per class its subsets.json and distances.json
    entries (JSON text) and subset count."""
    from pipeline.sources.base import safe_key
    from stages.metashift.distances import community_graph
    from stages.metashift.metagraph import draw_meta_graph

    assert _JOB is not None
    catalog, results = _JOB.catalog, []
    for cls in catalog.prepare(group):
        kept = catalog.subsets(cls)
        graph = catalog.meta_graph(cls)
        if _JOB.protocol == "official":
            merged = community_graph(catalog, cls)
            doc = graph.to_json_text(embedding=False, meta_graph=merged.to_json())
            matrix = {"communities": merged.names, "matrix": _rounded(merged.distances())}
        else:
            doc = graph.to_json_text(embedding=True)
            matrix = {"contexts": graph.contexts, "matrix": _rounded(graph.distances())}
        name = safe_key(cls)
        (_JOB.out / "graphs" / f"{name}.json").write_text(doc + "\n")
        if _JOB.draw:
            draw_meta_graph(graph, _JOB.out / "graphs" / f"{name}.png")
        results.append((cls, _subsets_json(kept, _JOB.quoted), json.dumps(matrix), len(kept)))
        catalog.forget(cls)
    return results


def _map_in_order(function: Callable[[Any], Any], items: list[Any], workers: int) -> Iterator[Any]:
    """`map(function, items)`, by `workers` forked processes when more than one (on Linux:
    elsewhere forking a process that holds NumPy's BLAS is not safe, and it runs here);
    results come back in the order of `items`."""
    import multiprocessing

    if workers <= 1 or len(items) <= 1 or not sys.platform.startswith("linux"):
        yield from map(function, items)
        return
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context) as pool:
        futures = [pool.submit(function, item) for item in items]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def _subsets_json(kept: dict[str, np.ndarray], quoted: np.ndarray) -> str:
    """{"<context>": {"size": n, "images": [ids]}, ...} from pre-encoded image ids."""
    entries = (
        f'{json.dumps(ctx)}: {{"size": {len(im)}, "images": [{", ".join(quoted[im].tolist())}]}}'
        for ctx, im in kept.items()
    )
    return "{" + ", ".join(entries) + "}"


def _rounded(matrix: np.ndarray) -> list:
    """Rounded to 6 decimals, NaN as null."""
    values = np.round(matrix, 6).astype(object)
    values[np.isnan(matrix)] = None
    return values.tolist()


class _JsonMapWriter:
    """Writes `{...head, "<field>": {"k1": v1, "k2": v2, ...}}` one entry at a time
    (or a plain `{"k1": v1, ...}` without a head)."""

    def __init__(self, path: Path, head: dict | None = None, field: str | None = None):
        self.handle = open(path, "w", encoding="utf-8")
        self.nested, self.first = field is not None, True
        if self.nested:
            self.handle.write(json.dumps(head)[:-1] + (", " if head else "") + f"{json.dumps(field)}: ")
        self.handle.write("{")

    def add(self, key: str, value: Any) -> None:
        self.add_json(key, json.dumps(value))

    def add_json(self, key: str, text: str) -> None:
        """An entry whose value is already JSON text."""
        self.handle.write(("\n" if self.first else ",\n") + f"{json.dumps(key)}: {text}")
        self.first = False

    def __enter__(self) -> _JsonMapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.write("}}\n" if self.nested else "}\n")
        self.handle.close()


def cmd_subsets(args: argparse.Namespace) -> int:
    from stages.metashift.scene_graphs import MetaShiftError

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be a positive integer, got {args.workers}")
    workers = args.workers or _available_cpus()
    with _Progress() as progress:
        catalog = _catalog(args, progress)
        classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
        try:
            summary = export_catalog(
                catalog, Path(args.out), classes, args.png, args.protocol, workers, progress.classes
            )
        except MetaShiftError as exc:
            raise UsageError(str(exc)) from None
    print(
        f"{len(summary['classes'])} classes, {sum(summary['classes'].values())} subsets from "
        f"{summary['images']} images -> {args.out}",
        file=sys.stderr,
    )
    return 0


def _available_cpus() -> int:
    """The CPUs this process may run on (all of them where there is no affinity), at most 8."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, 8))


class _Progress:
    """A progress bar on stderr (a terminal only): bytes read, then classes written. It
    refreshes when told, with no thread of its own, so worker processes fork cleanly."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[done]}"),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=False,
            transient=True,
            disable=not console.is_terminal,
        )
        self._task: Any = None
        self._shown = 0.0  # when the bar was last drawn

    def _refresh(self, final: bool = False) -> None:
        """Redraw at most ten times a second (and at the end)."""
        import time

        now = time.monotonic()
        if final or now - self._shown >= 0.1:
            self._bar.refresh()
            self._shown = now

    def __enter__(self) -> _Progress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)

    def reading(self, path: str) -> Callable[[int], None]:
        file = Path(path)
        size = file.stat().st_size if file.suffix.lower() == ".json" and file.is_file() else None  # tables: no total
        self._task = self._bar.add_task("reading", total=size, done="")

        def update(done: int) -> None:
            self._bar.update(self._task, completed=done, done=f"{done / 2**20:.0f} MB")
            self._refresh()

        return update

    def classes(self, done: int, total: int) -> None:
        if done == 1:
            self._bar.update(self._task, visible=False)
            self._task = self._bar.add_task("classes", total=total, done="")
        self._bar.update(self._task, completed=done, done=f"{done}/{total}")
        self._refresh(done == total)


def cmd_sweep(args: argparse.Namespace) -> int:
    from stages.metashift.distances import sweep_mixes
    from stages.metashift.scene_graphs import MetaShiftError

    for flag, value in (("--mix-size", args.mix_size), ("--count", args.count)):
        if value < 1:
            raise UsageError(f"{flag} must be a positive integer, got {value}")
    catalog = _catalog(args)
    try:
        catalog.subset(args.cls, args.test)
        mixes = sweep_mixes(_sweep_graph(catalog, args), args.test, args.mix_size, args.count)
    except MetaShiftError as exc:
        raise UsageError(str(exc)) from None
    result = {"class": args.cls, "test": args.test, "protocol": args.protocol, "mixes": mixes}
    print(json.dumps(result, indent=1, allow_nan=False))
    return 0


def _sweep_graph(catalog: Any, args: argparse.Namespace) -> Any:
    if args.protocol == "subsets":
        return catalog.meta_graph(args.cls)
    from stages.metashift.distances import community_graph

    return community_graph(catalog, args.cls)


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.core.manifest import load_manifest
    from pipeline.sources.scene_graph import split_report

    release = load_manifest(args.manifest)
    if release.source.kind != "scene_graph":
        raise UsageError(f"{args.manifest}: source.kind is {release.source.kind!r}, expected 'scene_graph'")
    print(json.dumps(split_report(release.source), indent=1))
    return 0
