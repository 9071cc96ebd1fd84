"""Exceptions of the serial link, defined in `edgecal.errors` (see its tree) and re-exported here."""

from __future__ import annotations

from ..errors import (DeviceGone, FrameError, HandshakeTimeout, LinkError, PortError, ProtocolVersionError,
                      TablePushError)

__all__ = ["DeviceGone", "FrameError", "HandshakeTimeout", "LinkError", "PortError", "ProtocolVersionError",
           "TablePushError"]
