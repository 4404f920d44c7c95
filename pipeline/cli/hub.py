"""`publish`, `regenerate` and `schedule` commands."""

from __future__ import annotations

import argparse
import sys

from stages.base import UsageError


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "publish", help="upload a release folder to a Hugging Face dataset repo (only changed files)",
        description="Upload RELEASE_DIR to a Hugging Face Hub dataset repo: shards whose sha256 differs "
                    "from the remote LFS oid, the card, croissant.json, provenance.json and "
                    "samples.parquet; delete remote shards gone locally (only in a repo whose provenance.json "
                    "names this release, or with --allow-delete); tag the release version. The token "
                    "comes from HF_TOKEN or `hf auth login`. Safe to rerun: an interrupted publish resumes.")
    p.add_argument("release_dir", metavar="RELEASE_DIR", help="a built release folder (with provenance.json)")
    _hub_args(p)
    p.add_argument("--dry-run", action="store_true", help="list the operations without changing anything")
    _upload_args(p)
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser(
        "regenerate", help="rebuild only what changed since the last build, optionally publish it",
        description="Re-plan MANIFEST against the release in --out: rebuild shards whose fingerprint "
                    "changed (new source items, changed parameters, new stage or model version), delete "
                    "orphaned shards, rewrite provenance/card/croissant and bump the revision. Nothing "
                    "changed: nothing is done. Idempotent and locked, so it is safe from cron or CI.")
    _regenerate_args(p)
    p.set_defaults(func=cmd_regenerate)

    p = sub.add_parser(
        "schedule", help="run `regenerate` on a cron schedule in the foreground (a service loop)",
        description="Run `regenerate` at the times a cron expression names, one run at a time, logging one "
                    "line per run with what changed. Stop with Ctrl-C.")
    _regenerate_args(p)
    p.add_argument("--cron", required=True, metavar="EXPR",
                   help='cron expression, e.g. "0 3 * * 1" (Mondays 03:00, local time)')
    p.add_argument("--max-runs", type=int, default=None, metavar="N",
                   help="stop after N runs (default: run forever)")
    p.set_defaults(func=cmd_schedule)


def _hub_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", metavar="ORG/NAME", help="dataset repo (default: hub.repo of the manifest)")
    p.add_argument("--private", action="store_true", default=None,
                   help="create the repo private if it is new (default: hub.private of the manifest)")


def _upload_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-delete", action="store_true",
                   help="delete remote files under data/ that the release does not have even when the repo's "
                        "provenance.json is missing or names another release")
    p.add_argument("--transfer", choices=("auto", "xet", "lfs"), default="auto",
                   help="upload path: xet (hf_xet), lfs, or auto = xet when hf_xet is installed and "
                        "HF_HUB_DISABLE_XET is unset (default)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="timeout of one HTTP operation (default: $SHIFTFORGE_HUB_TIMEOUT or 300)")


def _upload_options(args: argparse.Namespace) -> dict:
    return {"allow_delete": args.allow_delete, "transfer": args.transfer, "timeout": args.timeout}


def _regenerate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", metavar="MANIFEST", help="release manifest (YAML)")
    p.add_argument("--out", required=True, metavar="DIR", help="release folder to bring up to date")
    p.add_argument("--publish", action="store_true", help="then publish the changed files to the Hub")
    _hub_args(p)
    _upload_args(p)
    p.add_argument("--workers", type=int, default=None,
                   help="local Dask worker processes (default: CPU count)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="an existing Dask scheduler to use")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="if another writer holds --out, wait up to SECONDS for it (default: 0)")


def cmd_publish(args: argparse.Namespace) -> int:
    from pipeline.hub.publish import PublishError, ReleaseRefused, publish_release

    try:
        result = publish_release(args.release_dir, args.repo, private=args.private, dry_run=args.dry_run,
                                 **_upload_options(args))
    except ReleaseRefused as exc:
        raise UsageError(str(exc)) from None
    except PublishError as exc:
        print(f"error: publish failed: {exc}", file=sys.stderr)
        return 1
    plan = result.plan
    if args.dry_run:
        print(f"dry run for {plan.repo_id} (tag {plan.tag}):")
        print("\n".join(f"  {line}" for line in plan.describe()))
    elif not plan.changed and not result.tagged:
        print(f"{plan.repo_id} is already up to date (tag {plan.tag} at {str(result.head)[:12]})")
    else:
        print(f"published to {plan.repo_id}: {len(plan.uploads)} upload(s), {len(plan.deletions)} "
              f"deletion(s), {len(result.commits)} commit(s); tag {plan.tag} at {str(result.head)[:12]} "
              f"(uploads through {plan.transfer})")
    return 0


def _run_once(args: argparse.Namespace):
    from pipeline.hub.regenerate import regenerate_release

    return regenerate_release(args.manifest, args.out, workers=args.workers, scheduler=args.scheduler,
                              publish=args.publish, repo_id=args.repo, private=args.private,
                              wait=getattr(args, "wait", 0.0), publish_options=_upload_options(args))


def cmd_regenerate(args: argparse.Namespace) -> int:
    from pipeline.hub.publish import PublishError, ReleaseRefused
    from pipeline.hub.regenerate import LockHeld

    try:
        result = _run_once(args)
    except LockHeld as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ReleaseRefused as exc:
        raise UsageError(str(exc)) from None
    except PublishError as exc:
        print(f"error: publish failed (the local release is up to date; rerun to resume): {exc}",
              file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from pipeline.core.manifest import load_manifest
    from pipeline.hub.regenerate import LockHeld
    from pipeline.hub.schedule import check_cron, run_schedule

    check_cron(args.cron)
    load_manifest(args.manifest)  # a bad manifest fails now (exit 2), not at the first run
    try:
        run_schedule(lambda: _run_once(args), args.out, args.cron, max_runs=args.max_runs)
    except LockHeld as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
