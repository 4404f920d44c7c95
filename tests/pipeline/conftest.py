"""Fixtures shared by the pipeline tests."""

import types

import pytest
from hub_server import HubServer


@pytest.fixture()
def hub(monkeypatch):
    """A loopback Hub on the client's default upload path (Xet when hf_xet is installed)."""
    from huggingface_hub.utils import _http, disable_progress_bars, enable_progress_bars, set_client_factory

    # the client's own backoff between its retries would sleep real seconds
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(sleep=lambda s: None))
    disable_progress_bars()
    with HubServer() as server:
        yield server
    enable_progress_bars()
    set_client_factory(_http.default_client_factory)
