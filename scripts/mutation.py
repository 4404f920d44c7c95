"""Mutation testing of the core modules with mutmut, one module group at a time.

Each group names the files to mutate and the fast tests that guard them.
The run happens in a scratch copy of the repository (the working tree is
never touched): mutmut writes every mutant of the group's files into
`mutants/`, runs the group's tests once to learn which test covers which
function, then runs the covering tests against each mutant. A mutant is
*killed* when a test fails, *survived* when all pass, *no tests* when no
selected test reaches its function (counted as not killed). The score is
killed / (killed + survived + no tests + timeouts).

Surviving mutants judged equivalent (no observable behaviour changes) are
listed in EQUIVALENT with the reason; they are reported apart, and the
adjusted score leaves them out of the denominator.

    pip install mutmut==3.8.1     # not a project dependency; e.g. --target /tmp/mutmut + PYTHONPATH
    nice -n 19 python scripts/mutation.py [group ...] [--keep]

Writes scripts/results/mutation.json (merging with groups run before).
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "scripts" / "results" / "mutation.json"

# group -> (files to mutate, test selection, extra pytest args)
GROUPS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "plan": (["pipeline/core/plan.py", "pipeline/core/seeding.py"],
             ["tests/pipeline/core/test_fingerprints.py", "tests/pipeline/core/test_plan.py",
              "tests/pipeline/core/test_seeds.py::test_derive_seed_is_the_documented_hash_and_depends_on_every_part"],
             []),
    "journal": (["pipeline/core/journal.py"], ["tests/pipeline/core/test_crash_paths.py"], ["-m", "not slow"]),
    "writers": (["pipeline/writers/files.py", "pipeline/writers/webdataset.py", "pipeline/writers/zarr_store.py"],
                ["tests/pipeline/core/test_crash_paths.py", "tests/pipeline/writers/test_writers.py"],
                ["-m", "not slow"]),
    # module-level tables are not mutated by mutmut: their values are pinned by the table tests
    # (tests/stages/test_*_tables.py); these groups mutate the code that applies them
    "corruption-catalogue": (["stages/corruptions/catalogue.py"],
                             ["tests/stages/test_corruption_tables.py", "tests/stages/test_corruptions.py"],
                             ["-m", "not slow"]),
    "medical-catalogue": (["stages/medical/catalogue.py", "stages/medical/transforms.py"],
                          ["tests/stages/test_medical_tables.py", "tests/stages/test_medical.py"],
                          ["-m", "not slow"]),
    "filter-rules": (["stages/filters/rules.py"], ["tests/test_boundaries.py", "tests/stages/test_filter_rules.py",
                                                   "tests/stages/test_filters.py"],
                     ["-m", "not slow"]),
    "metashift-graph": (["stages/metashift/metagraph.py", "stages/metashift/modularity.py"],
                        ["tests/test_boundaries.py", "tests/stages/test_metashift.py",
                         "tests/stages/test_metashift_overlaps.py", "tests/stages/test_metashift_modularity.py",
                         "tests/stages/test_metashift_equivalence.py", "tests/stages/test_metashift_official.py",
                         "tests/stages/test_metashift_graph_output.py"],
                        ["-m", "not slow",
                         "--deselect", "tests/stages/test_metashift.py::test_build_release_end_to_end",
                         "--deselect", "tests/stages/test_metashift.py::test_cli_subsets_end_to_end"]),
    # the two end-to-end builds start a Dask cluster per mutant (minutes per group); the unit tests guard the rest
    "metashift-distance": (["stages/metashift/distances.py", "stages/metashift/communities.py",
                            "stages/metashift/official.py"],
                           ["tests/stages/test_metashift_distances.py", "tests/stages/test_metashift_official.py",
                            "tests/stages/test_metashift.py", "tests/stages/test_metashift_subpopulation.py"],
                           ["-m", "not slow",
                            "--deselect", "tests/stages/test_metashift.py::test_build_release_end_to_end",
                            "--deselect", "tests/stages/test_metashift.py::test_cli_subsets_end_to_end"]),
    # building a release starts a Dask cluster, which deadlocks in mutmut's forked test processes: the
    # filtered-release test is left out (zarr_regions is covered in place by a rewritten provenance)
    "verify": (["pipeline/release/verify.py", "pipeline/release/verify_zarr.py"],
               ["tests/pipeline/release/test_verify.py"],
               ["-m", "not slow",
                "--deselect", "tests/pipeline/release/test_verify.py::test_filtered_release_zarr_regions_are_checked"]),
    # the whole module is mutated; the budget and reference tests reach every cheap function
    "adversarial-budget": (["stages/adversarial/attacks.py"],
                           ["tests/stages/test_adversarial_budget.py", "tests/stages/test_adversarial_reference.py"],
                           ["-m", "not slow"]),
}

# mutmut's time limit per mutant is 15 x (the covering tests' recorded time + timeout_constant) CPU seconds,
# half that in wall time. A module-scoped fixture that builds a release (and starts a Dask cluster) is timed
# once in the stats run but runs again in every mutant's process, so these groups need a larger constant.
TIMEOUT_CONSTANT: dict[str, float] = {"verify": 10.0}

# groups whose tests start from one release built by a test-module function: built once here, before
# mutating (verify is not part of the build), and copied by the fixture named by the environment variable
PREBUILT: dict[str, tuple[str, str, str]] = {
    "verify": ("tests.pipeline.test_verify", "build_pristine", "SHIFTFORGE_TEST_PRISTINE_RELEASE"),
}

# factories called while the module is imported (building a dispatch table): mutmut switches a
# mutant on only after import, so these mutants can never run; they are listed with the equivalents
INT64_FILL = "np.full(n, -1) is int64 on the 64-bit platforms we run on"
ZARR_DEFAULT = "zarr 3 writes format 3 and this dtype's fill value (0, '' or False) by default"
IMPORT_TIME = "unreachable under mutmut: the factory runs at import, before any mutant is switched on"
FLOAT64 = "astype(None) is float64 too; uint8 levels are exact in either"
ON_CPU = "the device argument: a no-op on the CPU the tests run on"
EQUAL_WEIGHTS = "equal weights of 2 instead of 1: scaling by two is exact, so the normalised mean is the same"
BATCH_4D = "images are N×C×H×W: shape[2:] is shape[-2:]"

# mutant name -> why it changes no observable behaviour
EQUIVALENT: dict[str, str] = {
    "pipeline.core.journal.xǁJournalWriterǁ_repair_torn_tail__mutmut_12":
        "read(None) after seek(-1, SEEK_END) reads the same single last byte",
    "pipeline.core.journal.xǁJournalWriterǁ_repair_torn_tail__mutmut_13":
        "read(2) after seek(-1, SEEK_END) reads the same single last byte",
    "pipeline.core.journal.xǁJournalWriterǁcompact__mutmut_12": "'UTF-8' and 'utf-8' name the same codec",
    "pipeline.core.seeding.x_derive_seed__mutmut_9": "int.from_bytes is big-endian by default (Python >= 3.11)",
    "stages.filters.rules.x__passes__mutmut_10":
        "NaN compares False with >=, so dropping the NaN mask first changes nothing when a minimum is set",
    "stages.filters.rules.x_keep_mask__mutmut_11": "a missing column becomes a NaN scalar: rejected all the same",
    "stages.filters.rules.x_keep_mask__mutmut_13": "a missing column becomes a NaN scalar: rejected all the same",
    "stages.filters.rules.x_keep_mask__mutmut_15": "a column of None becomes NaN in float64: rejected all the same",
    "stages.filters.rules.xǁRuleǁvoting__mutmut_2": "an 'all' rule has no `of` (validated), so list(of) is [] too",
    **{f"stages.medical.transforms.x__noise__mutmut_{i}": IMPORT_TIME for i in range(1, 10)},
    **{f"stages.corruptions.catalogue.x__plain__mutmut_{i}": IMPORT_TIME for i in range(1, 14)},
    "stages.corruptions.catalogue.x_corrupt_pixels__mutmut_17":
        "uint8 pixels times a float32 scalar are float32 anyway under NumPy 2's promotion rules",
    "stages.corruptions.catalogue.x_corrupt_pixels__mutmut_20":
        "uint8 pixels times a float32 scalar are float32 anyway under NumPy 2's promotion rules",
    **{f"stages.medical.transforms.x__plain__mutmut_{i}": IMPORT_TIME for i in range(1, 6)},
    "stages.medical.transforms.x_transform__mutmut_9": "the per-value noises ignore the severity argument",
    "stages.medical.transforms.x_transform__mutmut_33": "every transform already returns x's shape",
    "stages.medical.transforms.x_transform__mutmut_35": "every transform already returns uint8",
    "stages.medical.transforms.x_transform__mutmut_37": "every transform already returns uint8",
    **{f"pipeline.writers.zarr_store.x_ensure_store__mutmut_{i}": ZARR_DEFAULT
       for i in (15, 18, 29, 35, 62, 67, 75, 80)},
    "pipeline.writers.zarr_store.x_write_region__mutmut_17": INT64_FILL,
    "pipeline.writers.zarr_store.x_write_region__mutmut_20": INT64_FILL,
    "pipeline.writers.files.x_remove_temporaries__mutmut_3": "globbing a missing root finds nothing either way",
    "pipeline.writers.files.xǁReleaseStoreǁremove_empty_folders__mutmut_4":
        "the root is a folder; a listed file lists itself, so it is never taken for an empty folder",
    "pipeline.writers.files.x_sha256_file__mutmut_5": "fsspec opens files 'rb' by default",
    "pipeline.writers.files.x_sha256_file__mutmut_8": "read(None) hashes the whole file at once: the same digest",
    "pipeline.writers.files.xǁReleaseStoreǁappend_line__mutmut_9": "'UTF-8' and 'utf-8' name the same codec",
    "pipeline.writers.files.xǁReleaseStoreǁread_text__mutmut_4": "'UTF-8' and 'utf-8' name the same codec",
    "pipeline.writers.files.xǁReleaseStoreǁopen__mutmut_6": "the default mode is 'rb', the one passed",
    "pipeline.writers.webdataset.x_encode_image__mutmut_33": "OpenCV reads the extension case-insensitively",
    "pipeline.writers.webdataset.x_encode_image__mutmut_46": "OpenCV reads the extension case-insensitively",
    "pipeline.writers.webdataset.x_write_tar__mutmut_4":
        "Python's default PAX format writes plain ustar headers for names under 100 ASCII characters, as keys are",
    "pipeline.writers.webdataset.x_write_tar__mutmut_7":
        "Python's default PAX format writes plain ustar headers for names under 100 ASCII characters, as keys are",
    "pipeline.writers.webdataset.x_write_tar__mutmut_11":
        "sorting (key, members) tuples orders by key first; keys within a shard are unique",
    "pipeline.writers.webdataset.x_write_tar__mutmut_13":
        "sorting (key, members) tuples orders by key first; keys within a shard are unique",
    "pipeline.writers.zarr_store.x_ensure_store__mutmut_5":
        "mode 'a' opens the same existing group; on a missing store the empty group it creates is overwritten",
    "pipeline.writers.zarr_store.x_write_region__mutmut_56": "mode 'a' and 'r+' open the same existing store",
    "pipeline.writers.zarr_store.x_fit_image__mutmut_1":
        "a 3-tuple never equals (height, width), so every image is resized, to its own size when it fits: same pixels",
    "pipeline.core.journal.xǁJournalWriterǁ_repair_torn_tail__mutmut_20":
        "ends a torn line with 'XXXX' instead of nothing: the torn line stays unparsable and is skipped either way",
    **{f"stages.adversarial.attacks.x_{name}__mutmut_{i}": FLOAT64
       for name, numbers in (("quantise_within_budget", (5, 15)), ("achieved_norms", (3, 4, 24))) for i in numbers},
    **{f"stages.adversarial.attacks.x_{name}__mutmut_{i}": ON_CPU
       for name, numbers in (("_gaussian_kernel", (23, 25)), ("_random_start", (34, 36)),
                             ("ensemble_loss", (12, 14)), ("logits_of", (19, 21))) for i in numbers},
    **{f"stages.adversarial.attacks.x__pull_back_l2__mutmut_{i}": "NumPy takes any negative size as the one to infer"
       for i in (5, 16)},
    "stages.adversarial.attacks.x__pull_back_l2__mutmut_30": "NumPy reads the sort kind by its first letter, any case",
    **{f"stages.adversarial.attacks.x__random_start__mutmut_{i}":
       "adding a float32 delta to the images promotes it to their dtype: the same sum as converting it first"
       for i in (35, 37)},
    "stages.adversarial.attacks.x_craft__mutmut_15": "ti_kernel_width(0, width) is 0: no kernel either way",
    "stages.adversarial.attacks.x_craft__mutmut_22":
        "a width-1 Gaussian normalised to sum 1 is exactly 1: convolving with it leaves the gradient unchanged",
    "stages.adversarial.attacks.x_craft__mutmut_36": EQUAL_WEIGHTS,
    "stages.adversarial.attacks.x_ensemble_loss__mutmut_4": EQUAL_WEIGHTS,
    "stages.adversarial.attacks.x_craft__mutmut_92": "the TI kernel is square",
    "stages.adversarial.attacks.x_diverse_enlarge__mutmut_2": BATCH_4D,
    "stages.adversarial.attacks.x_diverse_shrink__mutmut_2": BATCH_4D,
    "stages.adversarial.attacks.x_diverse_enlarge__mutmut_51": "F.interpolate's default mode is 'nearest'",
    **{f"stages.adversarial.attacks.x_diverse_shrink__mutmut_{i}":
       "align_corners=None means False for bilinear resizing" for i in (48, 52)},
    "stages.adversarial.attacks.x_ensemble_loss__mutmut_23":
        "a boolean mask multiplies the per-sample losses the same as an integer one",
    **{f"stages.metashift.communities.x_build_community_graph__mutmut_{i}":
       "the fallback for a community without subsets is empty: no images in either dtype" for i in (8, 10)},
    "stages.metashift.communities.x_build_community_graph__mutmut_32": "spectral_layout's default dim is LAYOUT_DIM",
    **{name: "the class is only the common prefix of the sort key f'{cls}({context})': any prefix sorts the same"
       for name in ("stages.metashift.communities.x_detect_communities__mutmut_10",
                    "stages.metashift.distances.x_community_graph__mutmut_43",
                    "stages.metashift.distances.x_community_graph__mutmut_63")},
    **{f"stages.metashift.distances.x_community_graph__mutmut_{i}":
       "the shortcut reuses the catalog's communities, which detection finds the same (pinned by "
       "test_community_graph_reuses_the_catalog_graph_as_detection_would)" for i in (31, 32)},
    **{f"stages.metashift.distances.x_community_graph__mutmut_{i}": "an empty drop removes nothing in either dtype"
       for i in (5, 7)},
    "stages.metashift.distances.x_sweep_mixes__mutmut_3":
        "differs only at exactly 2,000,001 mixes: no C(n, k) with 2 <= k <= n - 2 equals it, so n = 2,000,001 nodes",
    **{f"stages.metashift.distances.x_sweep_mixes__mutmut_{i}":
       "NumPy makes Python ints int64 on the 64-bit platforms we run on" for i in (38, 40)},
    "stages.metashift.distances.x_sweep_mixes__mutmut_55": "NumPy reads the sort kind by its first letter, any case",
    "stages.metashift.official.x__merge__mutmut_40":
        "a retired community's share is never read back: its gains are -inf, and -inf minus any product stays -inf",
    **{f"stages.metashift.official.x__merge_component__mutmut_{i}":
       "compaction drops only retired rows and keeps the order, hence every tie-break: when it runs changes the "
       "cost, not the communities" for i in range(63, 69)},
    "stages.metashift.official.x__update_bests__mutmut_3":
        "rows u and v are recomputed anyway: u is the first row holding the largest gain, so row u's best is at v "
        "and row v's first best is at u",
    "stages.metashift.official.x__update_bests__mutmut_17":
        "a row whose best is at v is already recomputed (lost), so v <= old_at adds no row",
    **{f"stages.metashift.official.x__update_bests__mutmut_{i}":
       "recomputing more rows than needed finds the same bests" for i in (8, 9)},
    "stages.metashift.official.x_greedy_modularity_communities__mutmut_7": "None fills a boolean diagonal with False",
    "stages.metashift.official.x_greedy_modularity_communities__mutmut_12":
        "1.0 / edges is the same float whether edges is an int or an integral float",
    **{f"stages.metashift.official.x_greedy_modularity_communities__mutmut_{i}":
       "one pass and the per-component passes give the same communities (module doc); the bound picks the cheaper"
       for i in (18, 19)},
    **{f"stages.metashift.official.x_greedy_modularity_communities__mutmut_{i}":
       "the adjacency is symmetric: the weak components of the directed graph are its components"
       for i in (37, 39, 40)},
    **{f"stages.metashift.official.x_spectral_layout__mutmut_{i}":
       "weights are float (overlap coefficients); integer weights would give the same Laplacian values"
       for i in (3, 5)},
    "stages.metashift.official.x_spectral_layout__mutmut_34":
        "with n >= 3 the kept columns are orthonormal eigenvectors, never all constant: the largest centred "
        "coordinate is > 0",
    **{f"pipeline.release.verify.x_stop_io_threads__mutmut_{i}":
       "the bound on joining the codec threads: only a shutdown hanging for 30 s or more tells them apart"
       for i in (10, 15)},
    "stages.adversarial.attacks.x__random_picks__mutmut_25":
        "the last cumulative bound is exactly 1 (same left-to-right sum as the total) and a draw is below 1: "
        "the clamp never binds",
}

KILLED, SURVIVED, NO_TESTS = 1, 0, 33


def workspace(into: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the repository, copied."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.splitlines()
    for rel in listed:
        if rel.startswith("scripts/results/") or not (ROOT / rel).is_file():
            continue
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, into / rel)


def configure(into: Path, files: list[str], tests: list[str], pytest_args: list[str],
              timeout_constant: float = 1.0) -> None:
    config = configparser.ConfigParser()
    config["mutmut"] = {
        "timeout_constant": str(timeout_constant),
        "source_paths": "\n" + "\n".join(["pipeline", "stages"]),
        # data the tests read from the repository (tests/, setup.cfg and pyproject.toml are copied anyway)
        "also_copy": "\n" + "\n".join(["manifests"]),
        "only_mutate": "\n" + "\n".join(files),
        "pytest_add_cli_args_test_selection": "\n" + "\n".join(t for t in tests if (into / t.split("::")[0]).exists()),
        "pytest_add_cli_args": "\n" + "\n".join(["-p", "no:cacheprovider", "-x", *pytest_args]),
    }
    with open(into / "setup.cfg", "w") as handle:
        config.write(handle)


def mutmut(into: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=into, capture_output=True, text=True,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})})


def prebuild(into: Path, group: str) -> dict[str, str]:
    """The environment that points the group's tests at a release built once, before any mutant."""
    if group not in PREBUILT:
        return {}
    module, function, variable = PREBUILT[group]
    out = into / ".prebuilt"
    subprocess.run([sys.executable, "-c", f"from {module} import {function}; {function}({str(out)!r})"],
                   cwd=into, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(into), os.environ.get("PYTHONPATH"))
                                                                    if p)})
    return {variable: str(out)}


def diff_of(into: Path, name: str) -> str:
    shown = mutmut(into, "show", name).stdout.splitlines()
    return "\n".join(line for line in shown if line[:2] in ("- ", "+ "))


def survivor(scratch: Path, name: str, code: int) -> dict:
    row = {"mutant": name, "status": {SURVIVED: "survived", NO_TESTS: "no tests"}.get(code, f"exit {code}"),
           "diff": diff_of(scratch, name)}
    if name in EQUIVALENT:
        row["equivalent"] = EQUIVALENT[name]
    return row


def run_group(group: str, keep: bool) -> dict:
    files, tests, pytest_args = GROUPS[group]
    scratch = Path(tempfile.mkdtemp(prefix=f"mutation-{group}-"))
    started = time.time()
    try:
        workspace(scratch)
        configure(scratch, files, tests, pytest_args, TIMEOUT_CONSTANT.get(group, 1.0))
        done = mutmut(scratch, "run", env=prebuild(scratch, group))
        codes: dict[str, int] = {}
        for meta in (scratch / "mutants").rglob("*.meta"):
            codes.update(json.loads(meta.read_text())["exit_code_by_key"])
        codes = {name: code for name, code in codes.items() if code is not None}   # None: never run
        if not codes:
            raise RuntimeError(f"mutmut produced no results for {group}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        killed = sum(code == KILLED for code in codes.values())
        not_killed = sorted(name for name, code in codes.items() if code != KILLED)
        survivors = [survivor(scratch, name, codes[name]) for name in not_killed]
        equivalent = sum("equivalent" in s for s in survivors)
        return {"files": files, "tests": tests, "mutants": len(codes), "killed": killed,
                "survived": sum(codes[n] == SURVIVED for n in not_killed),
                "no_tests": sum(codes[n] == NO_TESTS for n in not_killed),
                "other": sum(codes[n] not in (SURVIVED, NO_TESTS) for n in not_killed),
                "score": round(killed / len(codes), 4),
                "score_without_equivalent": round(killed / max(1, len(codes) - equivalent), 4),
                "seconds": round(time.time() - started, 1), "not_killed": survivors}
    finally:
        if keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", default=list(GROUPS), help=f"any of {', '.join(GROUPS)}")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies to inspect mutants")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file to merge the groups into")
    args = parser.parse_args()
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; expected any of {', '.join(GROUPS)}")
    results = json.loads(args.results.read_text()) if args.results.exists() else {"groups": {}}
    for group in args.groups:
        row = run_group(group, args.keep)
        results["groups"][group] = row
        not_run = {k: v for k, v in results.pop("not_run", {}).items() if k.split(" ")[0] != group}
        if not_run:
            results["not_run"] = not_run
        print(f"{group:22s} {row['killed']}/{row['mutants']} killed ({row['score']:.1%}; "
              f"{row['score_without_equivalent']:.1%} without equivalent), {row['seconds']} s", flush=True)
        save(results, args.results)
    print(f"total {results['total']['killed']}/{results['total']['mutants']} killed "
          f"({results['total']['score']:.1%}) -> {args.results}")


def save(results: dict, path: Path) -> None:
    """Totals over every group run so far, written after each group."""
    rows = results["groups"].values()
    total, killed = sum(r["mutants"] for r in rows), sum(r["killed"] for r in rows)
    equivalent = sum(sum("equivalent" in s for s in r["not_killed"]) for r in rows)
    results["total"] = {"mutants": total, "killed": killed, "score": round(killed / max(1, total), 4),
                        "score_without_equivalent": round(killed / max(1, total - equivalent), 4),
                        "groups": sorted(results["groups"])}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
