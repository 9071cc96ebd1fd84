"""The edgecal version, kept in one place for the package, the CLI and the tables."""

__version__ = "0.1.0"
