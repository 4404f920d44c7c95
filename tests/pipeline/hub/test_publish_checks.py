"""What publish checks before the first upload (card, limits, whose repo, the token, the lock),
how it classifies errors, and that the loopback Hub refuses what the real one refuses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hub_server import HubServer
from test_publish import REPO, TOKEN, api_for, write_release

from pipeline.hub.checks import card_problems, limit_problems
from pipeline.hub.publish import PublishError, ReleaseRefused, RetryPolicy, WriteDenied, publish_release
from pipeline.hub.retry import http_status, is_transient, retry_after
from pipeline.release.provenance import SCHEMA_ID

NO_WAIT = RetryPolicy(attempts=3, first_wait=0.0, sleep=lambda s: None)
CARD = """---
license: cc-by-4.0
task_categories: [image-classification]
configs:
- config_name: fog
  data_files:
  - split: test
    path: data/fog/*.tar
---
# tiny-shift
"""


def publish(hub: HubServer, root, **options):
    return publish_release(root, REPO, api=api_for(hub), retry=NO_WAIT, **options)


def uploads(hub: HubServer) -> int:
    return sum(hub.state.count(m, p) for m, p in [("POST", "/preupload/"), ("POST", "/commit/"),
                                                  ("PUT", "/lfs-upload/"), ("POST", "/cas/")])


# -- the card ------------------------------------------------------------------------------------
def test_card_checks_name_each_problem(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(CARD)
    paths = ["data/fog/test-00000.tar", "README.md"]
    assert card_problems(readme, paths) == []
    assert card_problems(readme, ["data/fog/sub/test-00000.tar"]) == [   # `*` does not cross folders
        "README.md: config 'fog': data_files 'data/fog/*.tar' matches no file in the release"]
    readme.write_text(CARD.replace("cc-by-4.0", "CC BY 4.0").replace("split: test", "split: test set"))
    assert card_problems(readme, paths) == [
        "README.md: license must be one Hub license id such as 'cc-by-4.0'; got 'CC BY 4.0'",
        "README.md: config 'fog': split name 'test set' is not a word"]
    readme.write_text(CARD.replace("configs:", "configs:\n- config_name: fog\n  data_files: data/**\n"
                                                "- config_name: snow"))
    assert card_problems(readme, paths) == ["README.md: config 'snow' has no data_files",
                                            "README.md: config_name 'fog' appears 2 times"]
    readme.write_text("---\nlicense: [unclosed\n---\n")
    assert card_problems(readme, paths)[0].startswith("README.md: metadata does not parse")
    readme.write_text("# no metadata\n")
    assert card_problems(readme, paths) == ["README.md: no YAML metadata block (--- ... ---) at the top"]


def test_a_bad_card_is_refused_before_the_first_upload(hub, tmp_path):
    root = write_release(tmp_path, {"fog/test-00000": "a"})
    (root / "README.md").write_text(CARD.replace("data/fog/*.tar", "data/snow/*.tar"))
    with pytest.raises(ReleaseRefused, match="data_files 'data/snow/\\*.tar' matches no file"):
        publish(hub, root)
    assert hub.state.requests == []
    # a license id the Hub does not know passes the local check; the Hub's validator refuses it
    (root / "README.md").write_text(CARD.replace("cc-by-4.0", "made-up-license"))
    with pytest.raises(ReleaseRefused, match="the Hub rejects the dataset card: \"license\" must be "
                                             "one of the Hub's license ids; got 'made-up-license'") as caught:
        publish(hub, root)
    assert "\n" not in str(caught.value) and uploads(hub) == 0
    assert hub.state.count("POST", "/api/validate-yaml") == 1


def test_card_validation_that_fails_transiently_is_retried(hub, tmp_path):
    root = write_release(tmp_path, {"fog/test-00000": "a"})
    hub.state.fail_next[("POST", "/api/validate-yaml")] = [503] * 50
    waits: list[float] = []

    def outage_ends(seconds: float) -> None:
        waits.append(seconds)
        hub.state.fail_next.clear()

    assert publish_release(root, REPO, api=api_for(hub), retry=RetryPolicy(3, 0.25, outage_ends)).tagged
    assert waits == [0.25]


# -- deletes -------------------------------------------------------------------------------------
def foreign_repo(hub: HubServer, provenance: dict | None = None) -> None:
    hub.state.create_repo(REPO)
    hub.state.put_file(REPO, "data/theirs/part-0.tar", b"someone else's shard")
    if provenance is not None:
        hub.state.put_file(REPO, "provenance.json", json.dumps(provenance).encode())


@pytest.mark.parametrize("provenance", [None, {"schema": SCHEMA_ID, "release": {"name": "other"}},
                                        {"release": {"name": "tiny-shift"}}], ids=["none", "other", "not-ours"])
def test_deletes_in_a_repo_of_another_release_are_refused(hub, tmp_path, provenance):
    foreign_repo(hub, provenance)
    root = write_release(tmp_path, {"fog/test-00000": "a"})
    dry = publish(hub, root, dry_run=True)
    assert dry.plan.deletions == [] and dry.plan.refused_deletions == ["data/theirs/part-0.tar"]
    assert "delete data/theirs/part-0.tar (refused: not this release's repo; pass --allow-delete)" in \
        dry.plan.describe()
    with pytest.raises(ReleaseRefused, match="holds 1 file\\(s\\) under data/ that this release does not have"):
        publish(hub, root)
    assert "data/theirs/part-0.tar" in hub.state.head_files(REPO) and uploads(hub) == 0
    result = publish(hub, root, allow_delete=True)
    assert result.plan.deletions == ["data/theirs/part-0.tar"]
    assert "data/theirs/part-0.tar" not in hub.state.head_files(REPO)


def test_deletes_in_this_releases_repo_need_no_flag(hub, tmp_path):
    foreign_repo(hub, {"schema": SCHEMA_ID, "release": {"name": "tiny-shift"}})
    root = write_release(tmp_path, {"fog/test-00000": "a"})
    assert publish(hub, root).plan.deletions == ["data/theirs/part-0.tar"]


# -- limits --------------------------------------------------------------------------------------
def test_limits_are_the_hubs_and_exact_at_their_boundaries(monkeypatch):
    from pipeline.hub import checks as publish_checks

    # the Hub's documented recommendations: < 100k files per repo, < 10k entries per folder, files < 20 GB
    assert (publish_checks.MAX_FILES_PER_REPO, publish_checks.MAX_ENTRIES_PER_FOLDER) == (100_000, 10_000)
    assert publish_checks.LARGE_FILE_BYTES == 20 * 1000**3
    monkeypatch.setattr(publish_checks, "MAX_ENTRIES_PER_FOLDER", 10)
    monkeypatch.setattr(publish_checks, "MAX_FILES_PER_REPO", 30)
    folder = [f"data/fog/{i:05d}.tar" for i in range(9)]
    assert limit_problems(folder, {}) == ([], [])
    refusals, _ = limit_problems([*folder, "data/fog/extra.tar"], {})
    assert refusals == ["data/fog/ would hold 10 entries; the Hub supports fewer than 10 per folder "
                        "(use larger shards)"]
    many = [f"data/c{i // 9:02d}/{i:06d}.tar" for i in range(30)]
    refusals, _ = limit_problems(many, {})
    assert refusals == ["the repo would hold 30 files; the Hub supports fewer than 30 (use larger shards: "
                        "output.samples_per_shard)"]
    assert limit_problems(many[:-1], {}) == ([], [])
    sizes = {"a.tar": 20 * 1000**3 + 1, **{f"{i}.tar": 17 * 1000**3 for i in range(60)}}
    _, warnings = limit_problems(["a.tar"], sizes)
    assert warnings == ["1 file(s) exceed the Hub's recommended 20 GB per file, e.g. a.tar",
                        "uploading 1.0 TB: the Hub asks TB-scale repos to be arranged with it beforehand"]
    assert limit_problems(["a.tar"], {"a.tar": 20 * 1000**3})[1] == []


def test_a_release_over_the_folder_limit_is_refused_before_upload(hub, tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.hub.checks.MAX_ENTRIES_PER_FOLDER", 2)
    root = write_release(tmp_path, {"fog/test-00000": "a", "fog/test-00001": "b"})
    with pytest.raises(ReleaseRefused, match="data/fog/ would hold 2 entries"):
        publish(hub, root)
    assert uploads(hub) == 0


# -- the token -----------------------------------------------------------------------------------
def test_a_read_only_token_gets_one_clear_line_before_any_upload(hub, tmp_path):
    hub.state.read_only_tokens.add(TOKEN)
    root = write_release(tmp_path, {"fog/test-00000": "a"})
    with pytest.raises(WriteDenied) as caught:
        publish(hub, root)
    assert str(caught.value) == f"token cannot write to {REPO}: it is a read-only token"
    assert uploads(hub) == 0


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_write_says_the_token_cannot_write(hub, tmp_path, status):
    root = write_release(tmp_path, {"fog/test-00000": "a"})
    hub.state.fail_next[("POST", "/commit/")] = [status]
    with pytest.raises(WriteDenied) as caught:
        publish(hub, root)
    assert str(caught.value).startswith(f"token cannot write to {REPO} (HTTP {status})")
    assert hub.state.count("POST", "/commit/") == 1                # not retried


def test_a_repo_the_token_cannot_see_is_not_taken_for_a_missing_one(hub, tmp_path):
    hub.state.create_repo(REPO, private=True)
    hub.state.hidden.add(REPO)
    root = write_release(tmp_path, {"fog/test-00000": "a"})
    with pytest.raises(WriteDenied, match=f"token cannot write to {REPO}: the repo exists but this token "
                                          "cannot see it"):
        publish(hub, root)
    assert uploads(hub) == 0


# -- the lock and the content at upload time -----------------------------------------------------
def test_publish_waits_for_a_release_another_process_is_writing(hub, tmp_path):
    from pipeline.core.lock import RUN_LOCK

    root = write_release(tmp_path, {"fog/test-00000": "a"})
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; h = open(sys.argv[1], 'a+'); "
         "fcntl.flock(h, fcntl.LOCK_EX); h.write('pid 1 since now'); h.flush(); print('held', flush=True); "
         "time.sleep(30)", str(root / RUN_LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PublishError, match="another run is in progress"):
            publish(hub, root)
    finally:
        holder.kill()
        holder.wait()
    assert hub.state.requests == []


def test_publish_inside_a_run_that_holds_the_lock_goes_on(hub, tmp_path):
    from pipeline.core.lock import release_lock

    root = write_release(tmp_path, {"fog/test-00000": "a"})
    with release_lock(root, "regenerate"):                       # as regenerate --publish does
        assert publish(hub, root).tagged


def test_a_shard_rewritten_after_planning_is_not_uploaded(hub, tmp_path):
    root = write_release(tmp_path, {"fog/test-00000": "a"})
    shard = root / "data/fog/test-00000.tar"
    hub.state.before[("POST", "/api/repos/create")] = lambda: shard.write_bytes(b"rewritten" + shard.read_bytes())
    with pytest.raises(PublishError, match="data/fog/test-00000.tar changed on disk while publishing"):
        publish(hub, root)
    assert hub.state.count("POST", "/commit/") == 0 and hub.state.lfs_objects == {}


# -- classifying errors --------------------------------------------------------------------------
def http_error(status: int, headers: dict[str, str] | None = None, url: str = "http://hub/api/x") -> Exception:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx2.Request("POST", url)
    response = httpx2.Response(status, headers=headers or {}, request=request)
    return HfHubHTTPError(f"{status} error", response=response)


def wrapped(inner: Exception) -> RuntimeError:
    try:
        try:
            raise inner
        except Exception as exc:
            raise RuntimeError("Error while uploading 'data/x.tar' to the Hub.") from exc
    except RuntimeError as outer:
        return outer


def test_transient_errors_are_found_through_wrapping():
    assert is_transient(wrapped(http_error(503))) and http_status(wrapped(http_error(503))) == 503
    assert not is_transient(wrapped(http_error(400)))
    assert not is_transient(http_error(404))                      # e.g. an endpoint the server lacks
    assert is_transient(http_error(408)) and is_transient(http_error(429))
    assert not is_transient(http_error(403))                      # the Hub refuses this token
    assert is_transient(wrapped(http_error(403, url="https://storage.example/b/o?X-Amz-Signature=1")))
    assert not is_transient(RuntimeError("disk full"))
    assert is_transient(wrapped(ConnectionError("reset by peer")))
    xet = "Server error: Request error: HTTP status server error (503 Service Unavailable), domain: http://cas"
    assert is_transient(ConnectionError(xet)) and http_status(ConnectionError(xet)) == 503
    assert not is_transient(ConnectionError(xet.replace("server error (503 Service Unavailable)",
                                                        "client error (400 Bad Request)")))
    import httpx2
    assert is_transient(wrapped(httpx2.ReadTimeout("timed out")))


def test_retry_after_in_seconds_or_as_a_date_and_capped():
    assert retry_after(wrapped(http_error(429, {"Retry-After": "120"}))) == 120.0
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert retry_after(http_error(503, {"Retry-After": date}), now=lambda: 1445412480.0 - 30) == 30.0
    assert retry_after(http_error(503)) is None
    policy = RetryPolicy(attempts=5, first_wait=2.0, max_wait=600.0)
    assert policy.wait(1, http_error(429, {"Retry-After": "1"})) == 2.0      # never below the backoff
    assert policy.wait(3, http_error(429, {"Retry-After": "120"})) == 120.0
    assert policy.wait(1, http_error(429, {"Retry-After": "86400"})) == 600.0


def test_the_check_after_an_error_is_itself_retried():
    waits: list[float] = []
    calls = iter([http_error(502), "done"])
    checks = iter([ConnectionError("reset while checking"), None])

    def call():
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def recover():
        outcome = next(checks)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert RetryPolicy(4, 0.5, waits.append).run(call, what="x", recover=recover) == "done"
    assert waits == [0.5, 1.0]


# -- the loopback Hub is as strict as the real one -----------------------------------------------
def test_the_loopback_hub_refuses_what_the_hub_refuses(hub, tmp_path):
    import httpx2
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    api = api_for(hub)
    api.create_repo(REPO, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):                    # forgot repo_type="dataset"
        api.repo_info(REPO)
    ops = [CommitOperationAdd(f"notes/{i}.md", f"{i}".encode()) for i in range(101)]
    with pytest.raises(HfHubHTTPError) as caught:                   # forgot to batch
        api.create_commit(REPO, ops, commit_message="x", repo_type="dataset")
    assert caught.value.response.status_code == 422
    with pytest.raises(HfHubHTTPError) as caught:                   # forgot the token
        api_for(hub, token=False).create_commit(REPO, ops[:1], commit_message="x", repo_type="dataset")
    assert caught.value.response.status_code == 401
    big = {"key": "file", "value": {"path": "big.bin", "encoding": "base64",
                                    "content": __import__("base64").b64encode(b"x" * (10 * 2**20 + 1)).decode()}}
    header = {"key": "header", "value": {"summary": "x", "description": ""}}
    body = "\n".join(json.dumps(line) for line in (header, big))   # forgot LFS for a large file
    response = httpx2.post(f"{hub.url}/api/datasets/{REPO}/commit/main", content=body,
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 400 and "LFS/Xet" in response.json()["error"]


# -- the conditions a publish runs under ----------------------------------------------------------
def test_the_upload_path_is_chosen_explicitly_and_restored(monkeypatch):
    from huggingface_hub import constants

    from pipeline.hub.env import transfer_path

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    with transfer_path("auto") as path:
        assert path == "xet"
    with transfer_path("lfs") as path:
        assert path == "lfs" and constants.HF_HUB_DISABLE_XET is True
    assert constants.HF_HUB_DISABLE_XET is False
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)      # HF_HUB_DISABLE_XET=1 in the environment
    with transfer_path("auto") as path:
        assert path == "lfs"
    with transfer_path("xet") as path:
        assert path == "xet"
    with pytest.raises(ReleaseRefused, match="transfer must be one of auto, xet, lfs; got 'http'"):
        with transfer_path("http"):
            pass
    monkeypatch.setattr("huggingface_hub.utils._runtime.is_package_available", lambda name: False)
    with pytest.raises(ReleaseRefused, match="transfer 'xet' needs the hf_xet package"):
        with transfer_path("xet"):
            pass


def test_timeouts_are_finite_unless_the_user_configured_the_client(monkeypatch):
    from huggingface_hub.utils import _http, get_session, set_client_factory

    from pipeline.hub.env import hub_timeout, use_finite_timeouts

    monkeypatch.delenv("SHIFTFORGE_HUB_TIMEOUT", raising=False)
    assert hub_timeout() == 300.0 and hub_timeout(12.5) == 12.5
    monkeypatch.setenv("SHIFTFORGE_HUB_TIMEOUT", "45")
    assert hub_timeout() == 45.0
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv("SHIFTFORGE_HUB_TIMEOUT", bad)
        with pytest.raises(ReleaseRefused):
            hub_timeout()
    try:
        assert use_finite_timeouts(45.0)
        timeout = get_session().timeout
        assert (timeout.connect, timeout.read, timeout.write) == (30.0, 45.0, 45.0)
        mine = lambda: _http.default_client_factory()                   # noqa: E731 - a user's own factory
        set_client_factory(mine)
        assert not use_finite_timeouts(45.0) and _http._GLOBAL_CLIENT_FACTORY is mine
    finally:
        set_client_factory(_http.default_client_factory)
