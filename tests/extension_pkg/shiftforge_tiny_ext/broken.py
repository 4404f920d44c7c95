"""Classes that break the extension contract, one way each (for error messages)."""

from __future__ import annotations

from stages.base import Stage


class NotAStage:
    name = "not_a_stage"


class NoParams(Stage):
    name = "no_params"
    version = "1.0"


class NoVersion(Stage):
    name = "no_version"
    from shiftforge_tiny_ext.stage import InvertParams as Params


class WrongTag(Stage):
    name = "wrong_tag"
    version = "1.0"
    from shiftforge_tiny_ext.stage import InvertParams as Params
