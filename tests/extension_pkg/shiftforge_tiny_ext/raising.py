"""A module whose import fails, as a broken extension's would."""

raise RuntimeError("tiny extension failed to import")
