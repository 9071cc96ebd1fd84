"""The C library (firmware_interface/): warning-free C99, libc use, its own tests and fuzz harness
under AddressSanitizer + UndefinedBehaviorSanitizer, and the example device's build."""

from __future__ import annotations

import subprocess

import pytest

from edgecal.link.build import ROOT, WARNINGS, build, compiler
from link_helpers import freestanding_object

pytestmark = [pytest.mark.skipif(compiler() is None, reason="needs gcc (Debian package gcc) to build firmware_interface"),
              pytest.mark.needs_host]  # builds and runs C programs with the host gcc
VECTORS = ROOT / "vectors" / "frames.txt"


@pytest.fixture(scope="module")
def bindir(tmp_path_factory):
    return tmp_path_factory.mktemp("c-build")


def test_library_builds_warning_free_and_uses_only_memcpy_from_libc(tmp_path):
    _, undefined = freestanding_object("ecal_link.c", tmp_path)
    assert undefined <= {"memcpy"}, undefined


def test_header_is_self_contained(tmp_path):
    src = tmp_path / "use.c"
    src.write_text('#include "ecal_link.h"\nstatic ecl_link l;\nint main(void) { return ecl_streaming(&l); }\n')
    done = subprocess.run([compiler(), *WARNINGS, f"-I{ROOT / 'include'}", "-c", str(src), "-o", str(tmp_path / "u.o")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_c_unit_tests_and_vectors_pass_under_sanitizers(bindir):
    exe = build("test_ecal_link", bindir, sanitize=True)
    done = subprocess.run([str(exe), str(VECTORS)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    vectors, checks, failed = (int(w) for w in done.stdout.split()[0:6:2])
    assert vectors == 53 and checks > 250 and failed == 0, done.stdout


def test_c_decoder_fuzz_harness_under_sanitizers(bindir):
    exe = build("fuzz_rx", bindir, sanitize=True)
    done = subprocess.run([str(exe), "100000", "7", str(VECTORS)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "100000 inputs" in done.stdout and "no failure" in done.stdout


def test_example_device_builds_warning_free_and_dumps_its_model(bindir):
    exe = build("ecal_device", bindir)
    raw = subprocess.run([str(exe), "--dump", "3"], capture_output=True, check=True, timeout=30).stdout
    assert len(raw) == 3 * (256 + 2048 + 512 + 40 + 128)
    again = subprocess.run([str(exe), "--dump", "1", "--input-offset", "2"], capture_output=True, check=True).stdout
    assert raw[-len(again):] == again  # input k depends on k alone
    bad = subprocess.run([str(exe), "--max-payload", "5", "--stdio"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_build_failures_are_reported(tmp_path, monkeypatch):
    from edgecal.link import build as b
    from edgecal.link.demo_stage import run_serial_stage
    from edgecal.link.errors import LinkError

    with pytest.raises(LinkError, match="building ecal_device failed"):
        build("ecal_device", tmp_path, defines=("ECL_PROTOCOL_VERSION=(",))
    monkeypatch.setattr(b, "compiler", lambda: None)
    with pytest.raises(LinkError, match="no C compiler found"):
        build("ecal_device", tmp_path)
    import edgecal.link.demo_stage as stage

    monkeypatch.setattr(stage, "compiler", lambda: None)
    assert run_serial_stage().lines() == ["serial stage skipped: no C compiler (install gcc) to build the example device"]
