"""Keeping source keys unique after cleaning, deterministically."""

from __future__ import annotations

import hashlib


class UniqueKeys:
    """Hands out keys that are unique within one index.

    `safe_key` already keeps distinct names distinct in practice, but two
    names can still meet after cleaning (`x.png` and `x.jpg` both become `x`).
    The first item to claim a key keeps it; a later one gets a suffix derived
    from its own identity (its path or member name), so the outcome depends
    only on the deterministic index order, never on timing.
    """

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def claim(self, key: str, identity: str, alternative: str | None = None) -> str:
        """`key` if free, else `alternative` if given and free, else a suffixed variant."""
        candidates = [key] if alternative is None else [key, alternative]
        digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        candidates.append(f"{key}-{digest}")
        for candidate in candidates:
            if candidate not in self._taken:
                self._taken.add(candidate)
                return candidate
        counter = 2
        while f"{candidates[-1]}-{counter}" in self._taken:
            counter += 1
        chosen = f"{candidates[-1]}-{counter}"
        self._taken.add(chosen)
        return chosen
