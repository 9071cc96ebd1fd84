"""The serial link: the host end of firmware_interface/PROTOCOL.md.

`SerialHost` talks to a device and yields whole samples: it composes a `DeviceLink`
(port, handshake, control, table push) with one `DeviceRun` per streaming run (an
explicit state machine) whose `SampleAssembler` rebuilds the samples. `StreamSession`
feeds them to a `Calibrator` and records what the link lost; `FrameDecoder` and
`encode_frame` are the codec they all build on.
"""

from .assembler import ReceivedSample, ReceivedTensor, SampleAssembler, SeqTracker
from .decoder import DecoderCounters, FrameDecoder
from .errors import DeviceGone, HandshakeTimeout, LinkError, PortError, ProtocolVersionError, TablePushError
from .frames import PROTOCOL_VERSION, Frame, TensorInfo, encode_frame
from .session import StreamResult, StreamSession
from .control import DeviceInfo, DeviceLink, StopRequested
from .host import SerialHost
from .run import DeviceRun, RunEvent, RunState

__all__ = [
    "DecoderCounters", "DeviceGone", "DeviceInfo", "DeviceLink", "DeviceRun", "Frame", "FrameDecoder", "HandshakeTimeout",
    "LinkError", "PROTOCOL_VERSION", "PortError", "ProtocolVersionError", "ReceivedSample", "ReceivedTensor", "RunEvent",
    "RunState", "SampleAssembler", "SeqTracker", "SerialHost", "StopRequested", "StreamResult", "StreamSession",
    "TablePushError", "TensorInfo", "encode_frame",
]
