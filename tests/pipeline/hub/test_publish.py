"""Publishing against a loopback Hub: the real huggingface_hub client, no internet."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hub_server import HubServer
from release_documents import sealed_provenance

from pipeline.hub.publish import (
    PublishError,
    ReleaseRefused,
    RetryPolicy,
    collect_release_files,
    publish_release,
)

TOKEN = "hf_TestTokenThatMustNeverLeak123"
REPO = "org/tiny-shift"
NO_WAIT = RetryPolicy(attempts=3, first_wait=0.0, sleep=lambda s: None)


def make_tar(path: Path, keys: list[str], salt: str = "") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key in keys:
            payload = json.dumps({"key": key, "salt": salt}).encode()
            info = tarfile.TarInfo(f"{key}.json")
            info.size, info.mtime = len(payload), 0
            tar.addfile(info, io.BytesIO(payload))
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def write_release(root: Path, shards: dict[str, str], version: str = "1.0.0", revision: int = 1) -> Path:
    """A minimal release folder: tar shards (shard id -> salt), provenance listing them, a card."""
    records, rows = [], []
    for shard_id, salt in shards.items():
        rel = f"data/{shard_id}.tar"
        keys = [f"{shard_id.replace('/', '_')}_{i}" for i in range(3)]
        sha = make_tar(root / rel, keys, salt)
        records.append({"shard_id": shard_id, "path": rel, "sha256": sha, "bytes": (root / rel).stat().st_size,
                        "count": 3})
        rows += [{"key": key, "config": shard_id.split("/")[0], "status": "ok", "shard": rel} for key in keys]
    pq.write_table(pa.Table.from_pylist(rows), root / "samples.parquet")
    release = {"name": "tiny-shift", "version": version, "license": "cc-by-4.0"}
    (root / "provenance.json").write_text(
        sealed_provenance(release, records, rows, revision, hub={"repo": REPO, "private": False}))
    (root / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# tiny-shift\n")
    return root


@pytest.fixture()
def hub(monkeypatch):
    import huggingface_hub.constants

    # these tests take the LFS path (HF_HUB_DISABLE_XET, as a user would switch); test_publish_faults and
    # the CLI test below take the Xet path
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    disable_progress_bars()
    with HubServer() as server:
        yield server
    enable_progress_bars()


def api_for(server: HubServer, token: str | None = TOKEN):
    from huggingface_hub import HfApi

    return HfApi(endpoint=server.url, token=token)


def publish(server: HubServer, root: Path, **kwargs):
    return publish_release(root, REPO, api=api_for(server), retry=NO_WAIT, **kwargs)


def test_first_publish_uploads_everything_and_tags(hub, tmp_path):
    root = write_release(tmp_path, {"fog/test-00000": "a", "fog/test-00001": "b", "snow/test-00000": "c"})
    result = publish(hub, root)
    files = hub.state.head_files(REPO)
    assert sorted(files) == [".gitattributes", "README.md", "data/fog/test-00000.tar",
                             "data/fog/test-00001.tar", "data/snow/test-00000.tar", "provenance.json",
                             "samples.parquet"]
    tar_sha = hashlib.sha256((root / "data/fog/test-00001.tar").read_bytes()).hexdigest()
    assert files["data/fog/test-00001.tar"].lfs_sha256 == tar_sha
    assert hub.state.count("PUT", "/lfs-upload/") == 4            # three tars and the parquet go through LFS
    assert hub.state.repos[REPO].tags == {"1.0.0": result.head}
    assert len(result.commits) == 1 and result.tagged


def test_republish_without_change_uploads_nothing(hub, tmp_path):
    root = write_release(tmp_path, {"fog/test-00000": "a", "fog/test-00001": "b"})
    first = publish(hub, root)
    hub.state.requests.clear()
    again = publish(hub, root)
    assert again.commits == [] and not again.tagged and again.head == first.head
    assert hub.state.count("PUT", "/lfs-upload/") == 0
    assert hub.state.count("POST", "/commit/") == 0 and hub.state.count("POST", "/preupload/") == 0
    assert len(again.plan.unchanged) == 5


def test_one_changed_shard_is_the_only_upload(hub, tmp_path):
    write_release(tmp_path, {"fog/test-00000": "a", "fog/test-00001": "b"}, revision=1)
    publish(hub, tmp_path)
    write_release(tmp_path, {"fog/test-00000": "a", "fog/test-00001": "CHANGED"}, revision=2)
    hub.state.requests.clear()
    result = publish(hub, tmp_path)
    assert [f.path for f in result.plan.uploads] == ["data/fog/test-00001.tar", "provenance.json"]
    assert hub.state.count("PUT", "/lfs-upload/") == 1
    assert hub.state.repos[REPO].tags["1.0.0-r2"] == result.head
    assert hub.state.repos[REPO].tags["1.0.0"] != result.head    # the old tag did not move


def test_shard_gone_locally_is_deleted_remotely(hub, tmp_path):
    write_release(tmp_path, {"fog/test-00000": "a", "snow/test-00000": "b"})
    publish(hub, tmp_path)
    (tmp_path / "data/snow/test-00000.tar").unlink()
    (tmp_path / "data/snow").rmdir()
    write_release(tmp_path, {"fog/test-00000": "a"}, revision=2)
    result = publish(hub, tmp_path)
    assert result.plan.deletions == ["data/snow/test-00000.tar"]
    assert "data/snow/test-00000.tar" not in hub.state.head_files(REPO)


def test_concurrent_change_fails_loudly(hub, tmp_path):
    root = write_release(tmp_path, {"fog/test-00000": "a"})
    publish(hub, root)
    write_release(tmp_path, {"fog/test-00000": "new"}, revision=2)
    # another writer commits after the plan was read, before our commit lands
    hub.state.before[("POST", "/preupload/")] = lambda: hub.state.external_commit(REPO, "notes.md", b"hi")
    with pytest.raises(PublishError, match="changed since it was read"):
        publish(hub, root)
    files = hub.state.head_files(REPO)
    assert "notes.md" in files                                   # their change survived
    assert files["data/fog/test-00000.tar"].lfs_sha256 != collect_release_files(root)[1][0].sha256


def test_existing_tag_at_another_commit_is_refused_before_upload(hub, tmp_path):
    write_release(tmp_path, {"fog/test-00000": "a"})
    publish(hub, tmp_path)
    write_release(tmp_path, {"fog/test-00000": "b"})            # same version and revision, new content
    hub.state.requests.clear()
    with pytest.raises(ReleaseRefused, match="tag '1.0.0' already exists"):
        publish(hub, tmp_path)
    assert hub.state.count("PUT", "/lfs-upload/") == 0 and hub.state.count("POST", "/commit/") == 0


def test_dry_run_lists_operations_and_changes_nothing(hub, tmp_path):
    root = write_release(tmp_path, {"fog/test-00000": "a", "fog/test-00001": "b"})
    result = publish(hub, root, dry_run=True)
    assert result.plan.describe()[:3] == [
        f"create dataset repo {REPO}",
        f"upload data/fog/test-00000.tar ({(root / 'data/fog/test-00000.tar').stat().st_size} bytes, "
        f"sha256 {hashlib.sha256((root / 'data/fog/test-00000.tar').read_bytes()).hexdigest()[:12]})",
        f"upload data/fog/test-00001.tar ({(root / 'data/fog/test-00001.tar').stat().st_size} bytes, "
        f"sha256 {hashlib.sha256((root / 'data/fog/test-00001.tar').read_bytes()).hexdigest()[:12]})",
    ]
    assert REPO not in hub.state.repos


def test_batches_stay_under_the_commit_limit_and_interrupted_publish_resumes(hub, tmp_path):
    root = write_release(tmp_path, {f"fog/test-{i:05d}": str(i) for i in range(5)})
    # from the second commit on, the Hub keeps answering 500 beyond the retries: the run dies half way
    fail_from_now = lambda: hub.state.fail_next.update({("POST", "/commit/"): [500, 500, 500]})
    hub.state.before[("POST", "/commit/")] = lambda: hub.state.before.update(
        {("POST", "/commit/"): fail_from_now})
    with pytest.raises(PublishError, match="500"):
        publish_release(root, REPO, api=api_for(hub), retry=NO_WAIT, batch_size=2)
    assert sorted(p for p in hub.state.head_files(REPO) if p.startswith("data/")) == [
        "data/fog/test-00000.tar", "data/fog/test-00001.tar"]
    assert hub.state.repos[REPO].tags == {}
    hub.state.requests.clear()
    result = publish_release(root, REPO, api=api_for(hub), retry=NO_WAIT, batch_size=2)
    assert [f.path for f in result.plan.uploads][:3] == [f"data/fog/test-{i:05d}.tar" for i in (2, 3, 4)]
    # shards 2 and 3 reached LFS storage before their commit failed: only shard 4 and the parquet travel
    assert hub.state.count("PUT", "/lfs-upload/") == 2 and len(result.commits) == 3
    assert hub.state.repos[REPO].tags == {"1.0.0": result.head}


def test_transient_errors_are_retried(hub, tmp_path):
    root = write_release(tmp_path, {"fog/test-00000": "a"})
    hub.state.fail_next[("POST", "/commit/")] = [503]
    hub.state.fail_next[("GET", "/refs")] = [502]
    waits: list[float] = []
    result = publish_release(root, REPO, api=api_for(hub), retry=RetryPolicy(3, 0.25, waits.append))
    assert hub.state.repos[REPO].tags == {"1.0.0": result.head}
    assert waits == [0.25, 0.25]


def test_bad_input_is_refused_before_any_request(hub, tmp_path, monkeypatch):
    root = write_release(tmp_path, {"fog/test-00000": "a"})
    with pytest.raises(ReleaseRefused, match="repo id must look like"):
        publish_release(root, "not a repo", api=api_for(hub), retry=NO_WAIT)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(ReleaseRefused, match="no Hugging Face token"):
        publish_release(root, REPO, api=api_for(hub, token=None), retry=NO_WAIT)
    (root / "data/fog/stray.tar").write_bytes(b"not in provenance")
    with pytest.raises(ReleaseRefused, match="stray.tar: not listed in provenance"):
        publish(hub, root)
    (root / "data/fog/stray.tar").unlink()
    (root / "data/fog/test-00000.tar").write_bytes(b"tampered")
    with pytest.raises(ReleaseRefused, match="differs from provenance"):
        publish(hub, root)
    assert hub.state.requests == []


def test_symlink_pointing_outside_is_never_uploaded(hub, tmp_path):
    root = write_release(tmp_path / "release", {"fog/test-00000": "a"})
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    (root / "croissant.json").symlink_to(secret)
    with pytest.raises(ReleaseRefused, match="croissant.json: is a symlink"):
        publish(hub, root)
    assert hub.state.requests == []


def test_token_never_appears_in_errors(hub, tmp_path):
    root = write_release(tmp_path, {"fog/test-00000": "a"})
    hub.state.before[("POST", "/api/repos/create")] = lambda: hub.state.fail_next.update(
        {("POST", "/api/repos/create"): [403]})
    with pytest.raises(PublishError) as caught:
        publish_release(root, REPO, api=api_for(hub), retry=NO_WAIT)
    assert "403" in str(caught.value) and TOKEN not in str(caught.value)


def test_cli_publish_reads_hf_endpoint_and_token_from_the_environment(hub, tmp_path):
    root = write_release(tmp_path / "release", {"fog/test-00000": "a", "fog/test-00001": "b"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_PROGRESS_BARS="1",
               HF_XET_CACHE=str(tmp_path / "xet"), HF_XET_CLIENT_RETRY_MAX_DURATION="0")

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipeline", "publish", str(root), *args],
                              capture_output=True, text=True, timeout=60, env={**env, **extra})

    done = cli()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"published to {REPO}: 5 upload(s), 0 deletion(s), 1 commit(s); tag 1.0.0")
    assert done.stdout.rstrip().endswith("(uploads through xet)")
    assert hub.state.count("POST", "/cas/v2/shards") == 1 and hub.state.count("PUT", "/lfs-upload/") == 0
    hub.state.put_file(REPO, "data/theirs/part-0.tar", b"not from this release")
    hub.state.put_file(REPO, "provenance.json", b"{}")
    write_release(root, {"fog/test-00000": "a", "fog/test-00001": "b"}, version="1.0.1")
    dry = cli("--dry-run", "--transfer", "lfs")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[-3:] == [
        "  delete data/theirs/part-0.tar (refused: not this release's repo; pass --allow-delete)",
        "  tag 1.0.1", "  4 file(s) unchanged; uploads go through lfs"]
    no_token = cli(HF_TOKEN="")
    assert no_token.returncode == 2 and "no Hugging Face token" in no_token.stderr
    for run in (done, dry, no_token):
        assert TOKEN not in run.stdout + run.stderr


def test_retry_backs_off_on_connection_errors_and_not_on_bad_requests():
    waits: list[float] = []
    attempts = iter([ConnectionError("reset by peer"), TimeoutError("read timed out"), "done"])

    def flaky():
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert RetryPolicy(4, 0.5, waits.append).run(flaky, what="test") == "done"
    assert waits == [0.5, 1.0]
    def bad_request():
        raise ValueError("bad payload")

    with pytest.raises(ValueError, match="bad payload"):
        RetryPolicy(4, 0.5, waits.append).run(bad_request, what="x")
    assert waits == [0.5, 1.0]                                   # no retry for a non-transient error
