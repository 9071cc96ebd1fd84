"""Every exception edgecal defines, in one tree.

Every error carries a one-line message that says what was found and what was
expected. They derive from builtin exceptions so callers can catch them either by
their edgecal name or by the builtin they refine (extra builtin bases in brackets)::

    Exception
    ├── EdgecalError                    public: every error edgecal raises on purpose
    │   ├── InputError (ValueError)     public: an array, file or argument edgecal cannot use
    │   │   ├── ConfigError             public: a configuration file
    │   │   └── WriteError (OSError)    public: a file that cannot be written
    │   ├── StateError (ValueError)     public: a corrupt or unknown state or table file
    │   ├── UnknownNameError (ValueError)  public: an unregistered method, format, ...
    │   ├── MalformedModelError (ValueError)  public: a model that is not valid ONNX
    │   ├── UnsafeModelError (PermissionError)  public: external data outside the model's folder
    │   ├── MissingExtraError (ImportError)  public: an optional package is not installed
    │   ├── Int32OverflowError (OverflowError)  public: an int8 kernel would leave int32
    │   ├── LinkError (OSError)         public: the serial link or the device failed
    │   │   ├── PortError               public: the port cannot be opened
    │   │   ├── HandshakeTimeout (TimeoutError)  public: no handshake answer in time
    │   │   ├── ProtocolVersionError (ValueError)  public: another protocol version
    │   │   ├── DeviceGone              public: the device did not come back
    │   │   └── TablePushError          public: the device refused a pushed table
    │   ├── SourceError (OSError)       public: a transient source failure (the daemon reopens)
    │   └── SourceExhausted             public: a finite source has nothing more to give
    ├── ValueError
    │   └── FrameError                  internal: a malformed frame, counted, never raised to users
    └── _ControlFlow                    control flow: raised and caught inside edgecal
        ├── Disconnected                the port failed (the link reconnects)
        ├── StopRequested               the stop event was set (ends the waits of its setter)
        └── ClientError                 a socket client broke the protocol (it is closed)

The control-flow exceptions derive from `_ControlFlow`, not `EdgecalError`, so an
``except EdgecalError`` meant for user-facing errors never swallows them. The old
import locations (``edgecal.link.errors``, ``edgecal.model.graph``, ...) re-export
these classes.
"""

from __future__ import annotations

__all__ = [
    "ClientError", "ConfigError", "DeviceGone", "Disconnected", "EdgecalError", "FrameError", "HandshakeTimeout",
    "InputError", "Int32OverflowError", "LinkError", "MalformedModelError", "MissingExtraError", "PortError",
    "ProtocolVersionError", "SourceError", "SourceExhausted", "StateError", "StopRequested", "TablePushError",
    "UnknownNameError", "UnsafeModelError", "WriteError",
]


class EdgecalError(Exception):
    """Base class of every error edgecal raises on purpose."""


class InputError(EdgecalError, ValueError):
    """An array, file or argument that edgecal cannot use as given."""


class ConfigError(InputError):
    """A configuration file that cannot be used as written."""


class WriteError(InputError, OSError):
    """A file cannot be written where asked: an `InputError` for the CLI, an `OSError` for retrying callers."""


class StateError(EdgecalError, ValueError):
    """A state or table file that is corrupt, truncated or of an unknown schema."""


class UnknownNameError(EdgecalError, ValueError):
    """A method, format or other registered name that does not exist."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known {kind}s: {', '.join(self.known)}")


class MalformedModelError(EdgecalError, ValueError):
    """A model that is not valid ONNX (bad tensor data, dangling inputs, ...), which no runtime can run.

    Not an `InputError` on purpose: ``--runtime auto`` hands a model edgecal's runner
    does not support to ONNX Runtime on an `InputError`, and a broken model must stop here.
    """


class UnsafeModelError(EdgecalError, PermissionError):
    """A model whose external data points outside its own folder (refused, never read)."""


class MissingExtraError(EdgecalError, ImportError):
    """An optional package edgecal needs for this feature is not installed."""


class Int32OverflowError(EdgecalError, OverflowError):
    """An accumulator or a fixed-point product that would leave int32 (TFLite would wrap silently)."""


class LinkError(EdgecalError, OSError):
    """The link or the device misbehaved in a way edgecal cannot work around."""


class PortError(LinkError):
    """The port cannot be opened (missing device, permissions, busy)."""


class HandshakeTimeout(LinkError, TimeoutError):
    """The device did not answer the handshake within the bounded wait."""


class ProtocolVersionError(LinkError, ValueError):
    """The device speaks another version of the link protocol."""


class DeviceGone(LinkError):
    """The device vanished and did not come back within the reconnect timeout."""


class TablePushError(LinkError):
    """The device did not accept a pushed table."""


class SourceError(EdgecalError, OSError):
    """A transient failure (device gone, peer closed); the daemon reopens with backoff."""


class SourceExhausted(EdgecalError):
    """The source has delivered everything it ever will."""


class FrameError(ValueError):
    """A frame whose payload is malformed (counted by the receiver, never raised to users)."""


class _ControlFlow(Exception):
    """Base of the exceptions edgecal raises to leave a loop or a wait and catches itself."""


class Disconnected(_ControlFlow):
    """The port failed (unplugged, hung up, write timed out)."""


class StopRequested(_ControlFlow):
    """The caller's stop event was set while the link was waiting."""


class ClientError(_ControlFlow):
    """A connection broke the protocol or a cap; it is closed and counted."""
