"""`edgecal ports` and `stream --port auto`.

The OS enumeration is the only test double: ``serial.tools.list_ports.comports`` is
replaced by a list of pyserial's own `ListPortInfo` objects. The stream itself runs end
to end over a real pty against the scripted device of test_link_host."""

from __future__ import annotations

import json

import pytest
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo
from test_link_host import fake  # noqa: F401  (fixture)

from edgecal import Calibrator
from edgecal.cli import main
from edgecal.cli.ports import board_name
from edgecal.formats import load_table


def usb_port(device: str, vid: int | None, pid: int | None, serial: str | None = None, desc: str = "n/a"):
    p = ListPortInfo(device, skip_link_detection=True)
    p.vid, p.pid, p.serial_number, p.description = vid, pid, serial, desc
    return p


@pytest.fixture
def ports(monkeypatch):
    """Set the ports the OS lists."""
    def set_ports(*found):
        monkeypatch.setattr(list_ports, "comports", lambda *a, **k: list(found))
    return set_ports


# The ids the README's table lists, written out here from the boards' own USB ids.
@pytest.mark.parametrize("vid, pid, word", [
    (0x2E8A, 0x0005, "Pico"), (0x2E8A, 0x000A, "Pico"), (0x2341, 0x0043, "Arduino"), (0x0483, 0x374B, "ST-LINK"),
    (0x0483, 0x5740, "STM32"), (0x303A, 0x1001, "Espressif"), (0x10C4, 0xEA60, "CP210x"), (0x1A86, 0x7523, "CH340"),
    (0x0403, 0x6001, "FT232R"), (0x0403, 0x6010, "FT2232H"), (0x0403, 0x6014, "FT232H"), (0x0403, 0x6015, "FT231X"),
])
def test_known_usb_ids_name_their_board(vid, pid, word):
    assert word in board_name(vid, pid)


@pytest.mark.parametrize("vid, pid", [(0x0483, 0x3748), (0x0403, 0x6011), (0x1234, 0x5678), (None, None)])
def test_other_ids_name_no_board(vid, pid):
    assert board_name(vid, pid) is None


def test_ports_json_reports_what_the_os_lists(ports, capsys):
    listed = [usb_port("/dev/ttyACM0", 0x2E8A, 0x000A, "E6614C311B", "Pico - Board CDC"), usb_port("/dev/ttyS0", None, None)]
    ports(*listed)
    assert main(["ports", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["command"] == "ports" and doc["ok"] is True
    by_device = {p["device"]: p for p in doc["ports"]}
    assert set(by_device) == {"/dev/ttyACM0", "/dev/ttyS0"}
    for info in listed:
        got = by_device[info.device]
        assert (got["vid"], got["pid"], got["serial_number"], got["description"]) == (
            info.vid, info.pid, info.serial_number, info.description)
    assert "Pico" in by_device["/dev/ttyACM0"]["board"] and by_device["/dev/ttyACM0"]["usb_id"] == "2E8A:000A"
    assert by_device["/dev/ttyS0"]["board"] is None and by_device["/dev/ttyS0"]["usb_id"] is None


def test_ports_table_lists_device_id_board_and_serial(ports, capsys):
    ports(usb_port("/dev/ttyUSB0", 0x1A86, 0x7523, None, "USB Serial"))
    assert main(["ports"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["device", "usb", "id"] and len(out) == 2
    assert out[1].startswith("/dev/ttyUSB0") and "1A86:7523" in out[1] and "CH340" in out[1]


def test_no_ports_says_so(ports, capsys):
    ports()
    assert main(["ports"]) == 0 and capsys.readouterr().out == "no serial ports found\n"


def _stream_auto(tmp_path, *extra):
    return main(["stream", "--port", "auto", "--samples", "5", "-o", str(tmp_path / "t.json"),
                 "--state", str(tmp_path / "s.ecst"), "-q", *extra])


def test_port_auto_streams_from_the_one_known_board(fake, ports, tmp_path, capsys):  # noqa: F811
    dev = fake(count=5)
    ports(usb_port("/dev/ttyS0", None, None), usb_port(dev.url, 0x2E8A, 0x000A), usb_port("/dev/ttyUSB7", None, None))
    assert _stream_auto(tmp_path) == 0
    table = load_table(tmp_path / "t.json")
    assert table.provenance["link"]["port"] == dev.url
    assert f"from {dev.url}" in capsys.readouterr().out
    state = Calibrator.load_state(tmp_path / "s.ecst")
    for name in ("t0", "t1", "t2"):
        sent = [k for k in dev.sent if k[1] == name]
        assert state.samples(name) == len(sent) == 5 and table[name].stats.samples == 5


def test_port_auto_takes_the_one_usb_port_when_no_board_is_known(fake, ports, tmp_path):  # noqa: F811
    dev = fake(count=5)
    ports(usb_port("/dev/ttyS0", None, None), usb_port(dev.url, 0x1234, 0x5678))
    assert _stream_auto(tmp_path) == 0
    assert load_table(tmp_path / "t.json").provenance["link"]["port"] == dev.url


@pytest.mark.parametrize("listed, words", [
    ([], ["found no board and no USB serial port", "ports: none"]),
    ([("/dev/ttyS0", None, None)], ["no board and no USB serial port", "/dev/ttyS0"]),
    ([("/dev/ttyACM0", 0x2E8A, 0x000A), ("/dev/ttyUSB0", 0x0403, 0x6001)],
     ["found 2 boards", "/dev/ttyACM0 (Raspberry Pi Pico", "/dev/ttyUSB0 (FTDI FT232R)"]),
    ([("/dev/ttyUSB0", 0x1234, 1), ("/dev/ttyUSB1", 0x1234, 2)], ["2 USB serial ports of unknown boards", "ttyUSB1"]),
])
def test_port_auto_refuses_to_guess(ports, tmp_path, capsys, listed, words):
    ports(*[usb_port(*p) for p in listed])
    assert _stream_auto(tmp_path) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgecal: error: --port auto ") and err.count("\n") == 1
    assert all(w in err for w in words) and "pass --port" in err
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "s.ecst").exists()
