"""Activation sources behind one interface, registered by name (see `base`)."""

from .base import Sample, Source, SourceError, SourceExhausted, register_source, source_class, source_kinds

__all__ = ["Sample", "Source", "SourceError", "SourceExhausted", "register_source", "source_class", "source_kinds"]
