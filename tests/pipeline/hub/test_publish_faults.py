"""Publishing through faults: every Hub step failing transiently (the run retries and finishes)
and permanently (the run stops with one line; the next run resumes), on the Xet and LFS paths."""

from __future__ import annotations

import hashlib

import pytest
from hub_server import HubServer
from test_publish import REPO, TOKEN, api_for, write_release

from pipeline.hub.publish import PublishError, RetryPolicy, publish_release

SHARDS = {"fog/test-00000": "a", "fog/test-00001": "b", "snow/test-00000": "c"}
EXPECTED = [".gitattributes", "README.md", "data/fog/test-00000.tar", "data/fog/test-00001.tar",
            "data/snow/test-00000.tar", "provenance.json", "samples.parquet"]

# (step, method, path pattern, upload path that reaches the step)
STEPS = [
    ("preupload", "POST", r"/preupload/", "xet"),
    ("xet-token", "GET", r"/xet-write-token/", "xet"),
    ("xet-upload", "POST", r"/cas/v1/xorbs/", "xet"),
    ("xet-shard", "POST", r"/cas/v2/shards", "xet"),
    ("lfs-batch", "POST", r"/info/lfs/objects/batch", "lfs"),
    ("lfs-upload", "PUT", r"/lfs-upload/", "lfs"),
    ("commit", "POST", r"/commit/", "xet"),
    ("tag", "POST", r"/tag/", "xet"),
]


def unique_shards(salt: str) -> dict[str, str]:
    """Content no earlier test uploaded, so the Xet client has no chunk to skip."""
    return {shard: f"{value}-{salt}" for shard, value in SHARDS.items()}


def assert_complete(hub: HubServer, root, result) -> None:
    files = hub.state.head_files(REPO)
    assert sorted(files) == EXPECTED
    for path in EXPECTED[2:5]:
        assert files[path].lfs_sha256 == hashlib.sha256((root / path).read_bytes()).hexdigest()
    assert hub.state.repos[REPO].tags == {"1.0.0": result.head}


@pytest.mark.parametrize(("step", "method", "pattern", "transfer"), STEPS, ids=[s[0] for s in STEPS])
def test_transient_failure_is_retried_by_publish_and_the_run_finishes(hub, tmp_path, step, method, pattern,
                                                                      transfer):
    root = write_release(tmp_path, unique_shards(f"transient-{step}"))
    # the Hub keeps failing (beyond the client's own retries) until publish has backed off once
    hub.state.fail_next[(method, pattern)] = [503] * 50
    waits: list[float] = []

    def outage_ends(seconds: float) -> None:
        waits.append(seconds)
        hub.state.fail_next.clear()

    result = publish_release(root, REPO, api=api_for(hub), retry=RetryPolicy(3, 0.25, outage_ends),
                             transfer=transfer)
    assert waits == [0.25]
    assert hub.state.count(method, pattern) >= 2
    assert result.plan.transfer == transfer
    assert (hub.state.count("POST", "/cas/v2/shards") > 0) == (transfer == "xet")
    assert (hub.state.count("PUT", "/lfs-upload/") > 0) == (transfer == "lfs")
    assert_complete(hub, root, result)


@pytest.mark.parametrize(("step", "method", "pattern", "transfer"), STEPS, ids=[s[0] for s in STEPS])
def test_permanent_failure_stops_with_one_line_and_the_next_run_resumes(hub, tmp_path, step, method,
                                                                       pattern, transfer):
    root = write_release(tmp_path, unique_shards(f"permanent-{step}"))
    hub.state.fail_next[(method, pattern)] = [400] * 50
    waits: list[float] = []
    with pytest.raises(PublishError) as caught:
        publish_release(root, REPO, api=api_for(hub), retry=RetryPolicy(3, 0.25, waits.append),
                        transfer=transfer)
    message = str(caught.value)
    assert "400" in message and "\n" not in message and TOKEN not in message
    assert message.startswith("tag 1.0.0 failed" if step == "tag" else f"upload and commit 6 file(s) to {REPO} failed")
    assert waits == []                                            # a 400 is not retried
    assert hub.state.repos[REPO].tags == {}
    hub.state.fail_next.clear()
    hub.state.requests.clear()
    result = publish_release(root, REPO, api=api_for(hub), retry=RetryPolicy(3, 0.25, waits.append),
                             transfer=transfer)
    assert_complete(hub, root, result)
    if step == "tag":                                             # everything had landed but the tag
        assert result.commits == [] and hub.state.count("POST", "/commit/") == 0


def test_rate_limit_waits_as_long_as_retry_after_asks(hub, tmp_path):
    root = write_release(tmp_path, SHARDS)
    hub.state.fail_next[("POST", "/commit/")] = [(429, {"Retry-After": "120"})]
    waits: list[float] = []
    result = publish_release(root, REPO, api=api_for(hub), retry=RetryPolicy(3, 0.25, waits.append))
    assert waits == [120.0]
    assert_complete(hub, root, result)


def test_a_stalled_response_times_out_and_is_retried(hub, tmp_path):
    import time

    from huggingface_hub.utils import get_session

    root = write_release(tmp_path, SHARDS)
    hub.state.before[("GET", "/refs")] = lambda: time.sleep(2.0)   # the Hub stops answering once
    waits: list[float] = []

    def back_off(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(1.2)                                            # the stall is over when publish retries

    started = time.monotonic()
    result = publish_release(root, REPO, api=api_for(hub), retry=RetryPolicy(4, 0.25, back_off), timeout=1.0)
    assert get_session().timeout.read == 1.0
    assert waits[0] == 0.25 and hub.state.count("GET", "/refs") >= 2 and time.monotonic() - started < 15
    assert_complete(hub, root, result)


@pytest.mark.parametrize("transfer", ["xet", "lfs"])
def test_a_commit_that_landed_but_whose_answer_was_lost_is_recognised(hub, tmp_path, transfer):
    root = write_release(tmp_path, unique_shards(f"lost-{transfer}"))
    hub.state.lose_response[("POST", "/commit/")] = [502]
    waits: list[float] = []
    result = publish_release(root, REPO, api=api_for(hub), retry=RetryPolicy(3, 0.25, waits.append),
                             transfer=transfer)
    assert waits == [0.25] and hub.state.count("POST", "/commit/") == 1     # not committed twice
    assert result.commits == [hub.state.repos[REPO].branches["main"]]
    assert_complete(hub, root, result)


def test_an_expired_storage_url_is_asked_for_again_not_taken_for_a_permission(hub, tmp_path):
    root = write_release(tmp_path, unique_shards("expired-url"))
    hub.state.fail_next[("PUT", "/lfs-upload/")] = [403] * 50     # the pre-signed URL expired in the queue
    waits: list[float] = []

    def outage_ends(seconds: float) -> None:
        waits.append(seconds)
        hub.state.fail_next.clear()

    result = publish_release(root, REPO, api=api_for(hub), retry=RetryPolicy(3, 0.25, outage_ends), transfer="lfs")
    assert waits == [0.25] and hub.state.count("POST", "/info/lfs/objects/batch") == 2
    assert_complete(hub, root, result)


def test_a_hub_without_xet_fails_once_with_the_switch_to_use(hub, tmp_path):
    root = write_release(tmp_path, unique_shards("no-xet"))
    hub.state.serves_xet = False
    waits: list[float] = []
    with pytest.raises(PublishError, match="does not serve Xet uploads: publish with --transfer lfs$"):
        publish_release(root, REPO, api=api_for(hub), retry=RetryPolicy(3, 0.25, waits.append), transfer="xet")
    assert waits == []                                            # a 404 is not retried
    result = publish_release(root, REPO, api=api_for(hub), retry=RetryPolicy(3, 0.25, waits.append),
                             transfer="lfs")
    assert_complete(hub, root, result)
