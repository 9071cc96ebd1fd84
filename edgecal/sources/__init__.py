"""Activation sources behind one interface, registered by name (see `base`).

Importing this package registers every kind: ``spool`` (a folder of .npy/.npz files),
``socket`` (applications push frames to a local Unix socket), ``serial`` (a device on
the link), and the model sources ``onnxruntime``, ``litert`` and ``runner``. Optional
packages are imported only when a source is opened.

>>> source_kinds()
['litert', 'onnxruntime', 'runner', 'serial', 'socket', 'spool']
"""

from .base import Sample, Source, SourceError, SourceExhausted, register_source, source_class, source_kinds
from .litert import LiteRTSource
from .onnxruntime import OnnxRuntimeSource
from .runner import RunnerSource
from .serial import SerialLinkSource
from .socket import SocketClient, SocketSource, push_sample
from .spool import SpoolSource

__all__ = [
    "LiteRTSource", "OnnxRuntimeSource", "RunnerSource", "Sample", "SerialLinkSource", "SocketClient", "SocketSource",
    "Source", "SourceError", "SourceExhausted", "SpoolSource", "push_sample", "register_source", "source_class",
    "source_kinds",
]
