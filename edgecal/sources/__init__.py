"""Activation sources behind one interface, registered by name (see `base`).

Importing this package registers every kind: ``spool`` (a folder of .npy/.npz files),
``socket`` (applications push frames to a local Unix socket), ``serial`` (a device on
the link), the model sources ``onnxruntime``, ``litert`` and ``runner``, and
``memory`` (samples held in this process: the template for a new source, see
`edgecal.sources.memory`). Optional packages are imported only when a source is
opened. Sources of other distributions load from the ``edgecal.sources`` entry points.

>>> [k for k in source_kinds() if k in BUILT_IN]
['litert', 'memory', 'onnxruntime', 'runner', 'serial', 'socket', 'spool']
"""

from .base import Sample, Source, SourceError, SourceExhausted, register_source, source_class, source_kinds
from .litert import LiteRTSource
from .memory import MemorySource
from .onnxruntime import OnnxRuntimeSource
from .runner import RunnerSource
from .serial import SerialLinkSource
from .socket import SocketClient, SocketSource, push_sample
from .spool import SpoolSource

BUILT_IN = ("litert", "memory", "onnxruntime", "runner", "serial", "socket", "spool")

__all__ = [
    "LiteRTSource", "MemorySource", "OnnxRuntimeSource", "RunnerSource", "Sample", "SerialLinkSource", "SocketClient", "SocketSource",
    "Source", "SourceError", "SourceExhausted", "SpoolSource", "push_sample", "register_source", "source_class",
    "source_kinds",
]
