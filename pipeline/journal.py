"""journal.jsonl: one line per finished shard, appended and fsynced as shards
complete. It is what makes a killed build resumable: a shard counts as done
only if its line is here and the file on disk still has the recorded sha256."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.records import ShardRecord

JOURNAL_NAME = "journal.jsonl"


def read_journal(out: Path) -> dict[str, ShardRecord]:
    """Latest record per shard; a torn last line (killed mid-write) is ignored."""
    path = Path(out) / JOURNAL_NAME
    records: dict[str, ShardRecord] = {}
    if not path.exists():
        return records
    with path.open("r", encoding="utf-8") as handle:
        for line in handle:
            try:
                record = ShardRecord.from_json(json.loads(line))
            except (json.JSONDecodeError, TypeError):
                continue
            records[record.shard_id] = record
    return records


class JournalWriter:
    def __init__(self, out: Path):
        Path(out).mkdir(parents=True, exist_ok=True)
        self.path = Path(out) / JOURNAL_NAME
        self._repair_torn_tail()
        self._handle = self.path.open("a", encoding="utf-8")

    def _repair_torn_tail(self) -> None:
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open("rb+") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")

    def append(self, record: ShardRecord) -> None:
        self._handle.write(json.dumps(record.to_json(), sort_keys=True) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def compact(self, records: list[ShardRecord]) -> None:
        """Rewrite the journal with exactly these records (drops superseded/orphaned lines)."""
        self.close()
        tmp = self.path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record.to_json(), sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        self._handle = self.path.open("a", encoding="utf-8")
