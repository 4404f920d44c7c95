"""shiftforge: build, curate, publish and regenerate shifted test sets."""

from stages import __version__  # one version for the distribution; stages never import pipeline

__all__ = ["__version__"]
