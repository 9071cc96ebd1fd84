"""Exceptions of the serial link; all are `EdgecalError`s with builtin bases."""

from __future__ import annotations

from ..errors import EdgecalError


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


class FrameError(ValueError):
    """A frame whose payload is malformed (counted by the receiver, never raised to users)."""
