"""sd_notify over a real datagram socket, and the checked TOML configuration."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from edgecal.config import ConfigError, Field, key_lines, load_config, many, parse_config
from edgecal.daemon.notify import Notifier


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()


def test_notifications_reach_the_socket(notify_socket):
    path, sock = notify_socket
    n = Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert n.active and n.watchdog_seconds == 2.0
    assert n.send(ready=True, status="warm\nready")
    assert sock.recv(1024) == b"READY=1\nSTATUS=warm ready"
    assert n.send(watchdog=True) and sock.recv(1024) == b"WATCHDOG=1"
    assert n.send(stopping=True) and sock.recv(1024) == b"STOPPING=1"


def test_abstract_socket_names_start_with_at():
    name = f"edgecal-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier(env={"NOTIFY_SOCKET": "@" + name}).send(status="x")
        assert sock.recv(64) == b"STATUS=x"


def test_watchdog_for_another_process_is_ignored_and_no_socket_is_a_no_op(caplog, tmp_path):
    assert Notifier(env={"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"}).watchdog_seconds is None
    assert not Notifier(env={}).active
    gone = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "missing")})
    assert gone.send(ready=True) is False and "sd_notify to" in caplog.text


SCHEMA = {
    "state": {"path": Field(str), "checkpoint_interval": Field(float, 30.0, lambda v: None if v > 0 else "must be > 0")},
    "output": {"method": Field(str, "kl"), "on_stop": Field(bool, True), "every_samples": Field(int, 0)},
    "source": many({"kind": Field(str), "path": Field(str, None)}),
}

GOOD = """# comment
[state]
path = "/var/lib/edgecal/state.ecst"
checkpoint_interval = 5

[[source]]
kind = "spool"
path = "/spool"

[[source]]
kind = "serial"
"""


def test_good_config_gets_defaults_and_types():
    cfg = parse_config(GOOD, SCHEMA)
    assert cfg["state"] == {"path": "/var/lib/edgecal/state.ecst", "checkpoint_interval": 5.0}
    assert cfg["output"] == {"method": "kl", "on_stop": True, "every_samples": 0}
    assert cfg["source"] == [{"kind": "spool", "path": "/spool"}, {"kind": "serial", "path": None}]


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD + "[output]\nmethod = \"kl\"\nbogus = 1\n", r"line 14: \[output\] bogus: unknown key; known keys: every_samples, method, on_stop"),
        (GOOD + "[output]\non_stop = \"yes\"\n", r"line 13: \[output\] on_stop: expected true or false, found 'yes'"),
        (GOOD + "[output]\nevery_samples = true\n", r"line 13: \[output\] every_samples: expected an integer, found True"),
        (GOOD.replace("checkpoint_interval = 5", "checkpoint_interval = -1"), r"line 4: \[state\] checkpoint_interval: must be > 0"),
        (GOOD.replace('kind = "serial"', 'kind = 7'), r"line 11: \[\[source\]\] #2 kind: expected a string"),
        (GOOD.replace('kind = "serial"', 'port = "x"'), r"line 11: \[\[source\]\] #2 port: unknown key"),
        ("[state]\n", r"\[state\] path: is required"),
        ("[stat]\npath = 1\n", r"line 1: unknown table \[stat\]; known tables: output, source, state"),
        ("[state\n", r"not valid TOML: .*line 1"),
    ],
)
def test_bad_configs_name_the_key_and_line(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(text, SCHEMA)


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "edgecal.toml"
    path.write_text("[state]\npath = 1\n")
    with pytest.raises(ConfigError, match=r"edgecal.toml: line 2: \[state\] path: expected a string"):
        load_config(path, SCHEMA)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml", SCHEMA)
    path.write_text(GOOD)
    assert load_config(path, SCHEMA)["state"]["checkpoint_interval"] == 5.0


def test_key_lines_tracks_arrays_of_tables():
    lines = key_lines(GOOD)
    assert lines[("source", 0, "kind")] == 7 and lines[("source", 1, "kind")] == 11 and lines[("state", 0, "path")] == 3


def test_a_reader_that_stops_reading_never_blocks_the_sender(notify_socket):
    path, sock = notify_socket
    n = Notifier(env={"NOTIFY_SOCKET": path})
    results = [n.send(status="x" * 512) for _ in range(2000)]  # far more than a socket buffer holds
    assert results[0] is True and results[-1] is False
    assert sock.recv(4096).startswith(b"STATUS=xxx")


MULTILINE = '''[state]
path = "/s"
note = """
checkpoint_interval = 1
bogus = 2
"""
checkpoint_interval = -1
'''


def test_a_key_inside_a_multi_line_string_is_not_a_key():
    schema = {"state": {**SCHEMA["state"], "note": Field(str, "")}}
    with pytest.raises(ConfigError, match=r"^line 7: \[state\] checkpoint_interval: must be > 0"):
        parse_config(MULTILINE, schema)
    lines = key_lines(MULTILINE.replace('"""', "'''") + "[[source]]\nkind = 'x'\n")
    assert lines[("state", 0, "checkpoint_interval")] == 7 and ("state", 0, "bogus") not in lines
    assert lines[("source", 0, "kind")] == 9


def test_key_lines_skips_comments_arrays_and_inline_tables_and_reads_quoted_and_dotted_keys():
    text = ('a = [\n  "x = 1", # y = 2\n  "]",\n]\n"quoted key" = 1\nb.c = {d = "}", e = 2}\n'
            "[ 'o' ]\nz = '#'\n[[ s ]] # comment\nk = 1\n[[s]]\nk = 2\n")
    assert key_lines(text) == {("", 0, "a"): 1, ("", 0, "quoted key"): 5, ("", 0, "b"): 6, ("o", 0, ""): 7,
                               ("o", 0, "z"): 8, ("s", 0, ""): 9, ("s", 0, "k"): 10, ("s", 1, ""): 11,
                               ("s", 1, "k"): 12}


STATE = '[state]\npath = "/s"\n'


@pytest.mark.parametrize(
    "text, message",
    [
        ("state = 5\n", r"^line 1: \[state\]: expected a table, found 5$"),
        ('# c\nsource = [1, 2]\n' + STATE, r"^line 2: \[\[source\]\]: expected an array of tables \(write \[\[source\]\] headers\), found \[1, 2\]$"),
        (STATE + '[source]\nkind = "a"\n', r"^line 3: \[\[source\]\]: expected an array of tables"),
        ('source = [[1]]\n' + STATE, r"^line 1: \[\[source\]\]: expected an array of tables"),
        ('[[state]]\npath = "/s"\n', r"^line 1: \[state\]: expected a table, found \[\{'path': '/s'\}\]$"),
        ('[state]\npath = "/s"\ncheckpoint_interval = inf\n', r"^line 3: \[state\] checkpoint_interval: expected a finite number, found inf$"),
        ('[state]\npath = "/s"\ncheckpoint_interval = nan\n', r"^line 3: \[state\] checkpoint_interval: expected a finite number, found nan$"),
        ("source = [" + ", ".join(["1"] * 100) + "]\n" + STATE, r"found \[1, 1, .*\.\.\.$"),
    ],
)
def test_a_table_of_the_wrong_type_is_one_error_not_a_crash(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(text, SCHEMA)


def test_without_a_toml_parser_the_error_names_the_missing_package_not_the_file(monkeypatch):
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10 ...
    monkeypatch.setitem(sys.modules, "tomli", None)  # ... with tomli missing
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD, SCHEMA)
    message = str(info.value)
    assert "needs the tomli package" in message and "pip install 'tomli>=1.1'" in message
    assert "not valid TOML" not in message and "edgecal[" not in message


def test_tomli_is_a_dependency_where_python_has_no_tomllib():
    from importlib.metadata import requires

    tomli = [r for r in requires("edgecal") or [] if r.startswith("tomli")]
    assert len(tomli) == 1 and 'python_version < "3.11"' in tomli[0] and "extra" not in tomli[0], tomli
    if sys.version_info < (3, 11):
        import tomli as parser  # installed with edgecal

        assert parser.loads(GOOD)["state"]["checkpoint_interval"] == 5
