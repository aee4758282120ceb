"""The package version (a leaf module: the backend records it in artefacts without importing the package root)."""

__version__ = "0.1.0"
