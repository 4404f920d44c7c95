"""shiftforge: build, curate, publish and regenerate shifted test sets."""

__version__ = "0.1.0"
