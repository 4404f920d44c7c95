"""journal.jsonl: one line per finished shard, appended and fsynced as shards
complete. It is what makes a killed build resumable: a shard counts as done
only if its line is here and the file on disk still has the recorded sha256.

On object stores (which cannot append) each line rewrites the small journal
object atomically, so a killed build still leaves only whole lines."""

from __future__ import annotations

import json
import os
from typing import Any

from pipeline.core.records import ShardRecord
from pipeline.writers.files import ReleaseStore

JOURNAL_NAME = "journal.jsonl"


def shard_is_done(record: ShardRecord | None, unit: Any, out: str | os.PathLike | ReleaseStore) -> bool:
    """Done = same fingerprint in the journal (`unit` is a WorkUnit or a packed shard) and the
    files still match it."""
    if record is None or record.fingerprint != unit.fingerprint:
        return False
    if record.path is not None:
        store = _store(out)
        if not store.exists(record.path) or store.size(record.path) != record.bytes:
            return False
        if store.sha256(record.path) != record.sha256:
            return False
    return True


def _store(out: str | os.PathLike | ReleaseStore) -> ReleaseStore:
    return out if isinstance(out, ReleaseStore) else ReleaseStore(out)


def read_journal(out: str | os.PathLike | ReleaseStore) -> dict[str, ShardRecord]:
    """Latest record per shard; a torn last line (killed mid-write) is ignored."""
    store = _store(out)
    records: dict[str, ShardRecord] = {}
    if not store.exists(JOURNAL_NAME):
        return records
    for line in store.read_text(JOURNAL_NAME).splitlines():
        try:
            record = ShardRecord.from_json(json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue
        records[record.shard_id] = record
    return records


def _line(record: ShardRecord) -> str:
    return json.dumps(record.to_json(), sort_keys=True)


class JournalWriter:
    def __init__(self, out: str | os.PathLike | ReleaseStore):
        self.store = _store(out)
        self.store.makedirs()
        self._repair_torn_tail()

    def _repair_torn_tail(self) -> None:
        """End a torn last line so the next record starts on a line of its own."""
        if self.store.exists(JOURNAL_NAME) and self.store.size(JOURNAL_NAME):
            with self.store.open(JOURNAL_NAME) as handle:
                handle.seek(-1, os.SEEK_END)
                torn = handle.read(1) != b"\n"
            if torn:
                self.store.append_line(JOURNAL_NAME, "")

    def append(self, record: ShardRecord) -> None:
        self.store.append_line(JOURNAL_NAME, _line(record))

    def close(self) -> None:
        """Nothing stays open between appends; kept so callers can release the journal explicitly."""

    def compact(self, records: list[ShardRecord]) -> None:
        """Rewrite the journal with exactly these records (drops superseded/orphaned lines)."""
        self.store.write_atomic(JOURNAL_NAME, "".join(_line(r) + "\n" for r in records).encode("utf-8"))
