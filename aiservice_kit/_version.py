"""The package's version: a leaf module, so no room imports the face."""

__version__ = "0.1.0"
