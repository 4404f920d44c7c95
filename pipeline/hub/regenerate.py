"""`regenerate`: bring a release folder in line with its manifest, then optionally publish.

The build engine already does the incremental part: it re-plans from the
manifest, skips shards whose fingerprint and sha256 stand in the journal,
rebuilds the rest (new source items, changed parameters, a new stage or model
version), deletes orphaned shards and rewrites provenance (bumping its
`revision` when the set of shards changed), the card and croissant.json. This
module adds what a scheduled job needs around it: one writer at a time (the
release lock of `pipeline.core.lock`, shared with build and publish), a one-line
account of what changed, and publishing only changed files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.lock import RUN_LOCK, LockHeld, exclusive_lock, release_lock

__all__ = ["RUN_LOCK", "LockHeld", "exclusive_lock", "RegenerateResult", "regenerate_release"]


@dataclass
class RegenerateResult:
    out: Path
    revision_before: int | None
    revision: int
    built: int
    skipped: int
    removed: list[str]
    counts: dict[str, int]
    seconds: float
    published: Any = None            # pipeline.hub.publish.PublishResult when --publish

    @property
    def changed(self) -> bool:
        return bool(self.built or self.removed) or self.revision != self.revision_before

    def summary(self) -> str:
        if self.revision_before is None:
            local = f"first build: {self.built} shards, revision {self.revision}"
        elif not self.changed:
            local = f"nothing changed ({self.skipped} shards up to date, revision {self.revision})"
        else:
            local = (f"rebuilt {self.built} shard(s), removed {len(self.removed)} orphaned, "
                     f"{self.skipped} unchanged; revision {self.revision_before} -> {self.revision}")
        ok = self.counts.get("ok", 0)
        return f"{local}; {ok} ok samples{self._publish_summary()} ({self.seconds:.1f}s)"

    def _publish_summary(self) -> str:
        if self.published is None:
            return ""
        plan = self.published.plan
        if not plan.changed and not self.published.tagged:
            return f"; {plan.repo_id} already up to date"
        return (f"; published to {plan.repo_id}: {len(plan.uploads)} upload(s), {len(plan.deletions)} "
                f"deletion(s), {len(self.published.commits)} commit(s), tag {plan.tag}")


def read_revision(out: Path) -> int | None:
    path = out / "provenance.json"
    if not path.exists():
        return None
    return int(json.loads(path.read_text()).get("revision", 1))


def regenerate_release(manifest: str | Path | Any, out: str | Path, *, workers: int | None = None,
                       scheduler: str | None = None, publish: bool = False, repo_id: str | None = None,
                       private: bool | None = None, api: Any = None, retry: Any = None,
                       on_event: Callable[[str], None] | None = None, wait: float = 0.0,
                       publish_options: dict[str, Any] | None = None) -> RegenerateResult:
    """Rebuild what changed in `out` and, with `publish`, upload what differs from the Hub
    (`publish_options`: PublishOptions' fields such as allow_delete, transfer, timeout).

    Raises LockHeld when another run holds the lock, ManifestError for a bad
    manifest (before anything is touched), and publish errors unchanged.
    """
    from pipeline.core.build import build_release, check_out
    from pipeline.core.engine import check_cluster_args
    from pipeline.core.manifest import load_manifest

    release = load_manifest(manifest) if isinstance(manifest, (str, Path)) else manifest
    check_cluster_args(workers, scheduler)
    check_out(out)            # bad --out: exit 2 before the lock creates anything
    out = Path(out)
    with release_lock(out, "regenerate", wait):
        before = read_revision(out)
        build = build_release(release, out, workers=workers, scheduler=scheduler, on_event=on_event, lock=False)
        result = RegenerateResult(out=out, revision_before=before, revision=read_revision(out) or 1,
                                  built=build.built, skipped=build.skipped, removed=list(build.removed),
                                  counts=build.counts, seconds=build.seconds)
        if publish:
            from pipeline.hub.publish import publish_release

            result.published = publish_release(out, repo_id, private=private, api=api, retry=retry,
                                               **(publish_options or {}))
    return result
