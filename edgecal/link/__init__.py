"""The serial link: the host end of firmware_interface/PROTOCOL.md.

`SerialSource` talks to a device and yields intact tensors; `StreamSession` feeds
them to a `Calibrator` and records what the link lost; `FrameDecoder` and
`encode_frame` are the codec both build on.
"""

from .assembler import ReceivedTensor, SampleAssembler, SeqTracker
from .decoder import DecoderCounters, FrameDecoder
from .errors import DeviceGone, HandshakeTimeout, LinkError, PortError, ProtocolVersionError, TablePushError
from .frames import PROTOCOL_VERSION, Frame, TensorInfo, encode_frame
from .session import StreamResult, StreamSession
from .control import DeviceInfo, DeviceLink, StopRequested
from .source import SerialSource

__all__ = [
    "DecoderCounters", "DeviceGone", "DeviceInfo", "DeviceLink", "Frame", "FrameDecoder", "HandshakeTimeout", "LinkError",
    "PROTOCOL_VERSION", "PortError", "ProtocolVersionError", "ReceivedTensor", "SampleAssembler", "SeqTracker",
    "SerialSource", "StopRequested", "StreamResult", "StreamSession", "TablePushError", "TensorInfo", "encode_frame",
]
