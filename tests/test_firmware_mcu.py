"""firmware_interface/ on real microcontrollers: the link library and the .ecal reader build
warning-free for Cortex-M0+ and Cortex-M4 (make cortex-m0plus cortex-m4), fit stated flash/RAM
budgets, keep no static state, need nothing from libc but memcpy; the NUCLEO-F411RE example
(make board) links, fits the chip and starts with its vector table at the start of flash.

Needs arm-none-eabi-gcc and newlib (Debian gcc-arm-none-eabi libnewlib-arm-none-eabi) and, for
the emulated run, qemu-system-arm; scripts/ci-apt-arm-none-eabi installs all three. Run with -s to see the size table recorded in
firmware_interface/README.md."""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from edgecal.link.build import ROOT

ARM = "arm-none-eabi-"


def toolchain_ready() -> bool:
    """make, arm-none-eabi-gcc and newlib (whose string.h the libraries include) are installed."""
    if shutil.which("make") is None or shutil.which(ARM + "gcc") is None:
        return False
    found = subprocess.run([ARM + "gcc", "-print-file-name=libc_nano.a"], capture_output=True, text=True, check=False)
    return "/" in found.stdout


pytestmark = pytest.mark.skipif(
    not toolchain_ready(),
    reason="needs make, arm-none-eabi-gcc and newlib (Debian gcc-arm-none-eabi libnewlib-arm-none-eabi; "
    "scripts/ci-apt-arm-none-eabi installs them)",
)
CORES = ("cortex-m0plus", "cortex-m4")
LIBS = ("ecal_link", "ecal_table")
FLASH_BUDGET = {"ecal_link": 6144, "ecal_table": 1536}  # bytes of .text + .rodata + .data per core
STATE_BUDGET = {"sizeof_ecl_link": 1600, "sizeof_ect_table": 32}  # bytes on a 32-bit core
# Helpers of libgcc (the compiler's runtime, not libc): division on cores without a divide
# instruction, and Thumb-1 switch tables.
LIBGCC = re.compile(r"__aeabi_\w+|__gnu_thumb1_case_\w+")
F411_FLASH, F411_RAM = (0x08000000, 512 * 1024), (0x20000000, 128 * 1024)


def run(*args: str | Path) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """`make cortex-m0plus cortex-m4 board` into a fresh directory: (build dir, make's output)."""
    out = tmp_path_factory.mktemp("mcu")
    done = subprocess.run(["make", "-C", str(ROOT), f"BUILD={out}", *CORES, "board"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    return out, done


def sections(path: Path) -> dict[str, int]:
    """Section name -> size, from `size -A`."""
    rows = (line.split() for line in run(ARM + "size", "-A", path).splitlines())
    return {r[0]: int(r[1]) for r in rows if len(r) == 3 and r[1].isdigit()}


def usage(path: Path) -> tuple[int, int]:
    """(flash, RAM) of an object: .text + .rodata + .data, and .data + .bss."""
    sizes = sections(path)
    flash = sum(n for s, n in sizes.items() if s.startswith((".text", ".rodata", ".data")))
    return flash, sum(n for s, n in sizes.items() if s.startswith((".data", ".bss")))


def symbol_sizes(path: Path) -> dict[str, int]:
    rows = (line.split() for line in run(ARM + "nm", "-S", path).splitlines())
    return {r[3]: int(r[1], 16) for r in rows if len(r) == 4}


def test_make_builds_every_core_and_the_board_warning_free_with_werror(built):
    _, done = built
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in (done.stdout + done.stderr).replace("-Wl,--fatal-warnings", "")
    compiles = [line for line in done.stdout.splitlines() if ARM + "gcc " in line]
    assert compiles and all("-Werror" in c and "-Os" in c for c in compiles), compiles
    assert [sum(f"-mcpu={core} " in c for c in compiles) for core in CORES] == [2, 3], compiles  # m4: 2 + the board


@pytest.mark.parametrize("core", CORES)
def test_libraries_fit_their_budgets_and_keep_no_static_state(built, core, capsys):
    out, _ = built
    rows = []
    for lib in LIBS:
        flash, ram = usage(out / core / f"{lib}.o")
        assert 0 < flash <= FLASH_BUDGET[lib], (lib, flash)
        assert ram == 0, f"{lib} has {ram} bytes of static data: all state must live in the caller's struct"
        rows.append(f"{lib} {flash} B")
    state = symbol_sizes(out / core / "state_sizes.o")
    assert set(state) == set(STATE_BUDGET) and all(state[k] <= STATE_BUDGET[k] for k in state), state
    with capsys.disabled():
        print(f"\n{core}: flash {', '.join(rows)}; RAM 0 B static, sizeof(ecl_link) {state['sizeof_ecl_link']} B, "
              f"sizeof(ect_table) {state['sizeof_ect_table']} B")  # fmt: skip


@pytest.mark.parametrize("core", CORES)
def test_libraries_need_only_memcpy_and_libgcc(built, core, tmp_path):
    out, _ = built
    objects = [out / core / f"{lib}.o" for lib in LIBS]
    undefined = set(run(ARM + "nm", "-u", *objects).split()) - {"U"} - {f"{o}:" for o in objects}
    assert {u for u in undefined if not LIBGCC.fullmatch(u)} == {"memcpy"}, undefined
    # Proof by linking: every function kept, no libc, only libgcc and a memcpy of our own.
    stub = tmp_path / "stub.c"
    stub.write_text("#include <stddef.h>\nvoid *memcpy(void *d, const void *s, size_t n);\n"
                    "void *memcpy(void *d, const void *s, size_t n) { char *o = d; const char *i = s;"
                    " while (n--) *o++ = *i++; return d; }\nvoid _start(void);\nvoid _start(void) { }\n")  # fmt: skip
    cpu = {"cortex-m0plus": ["-mcpu=cortex-m0plus", "-mfloat-abi=soft"],
           "cortex-m4": ["-mcpu=cortex-m4", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]}[core]  # fmt: skip
    run(ARM + "gcc", *cpu, "-mthumb", "-ffreestanding", "-nostdlib", "-Wl,--no-gc-sections", *objects, stub,
        "-lgcc", "-o", tmp_path / "alone.elf")  # fmt: skip
    names = run(ARM + "nm", tmp_path / "alone.elf")
    assert not re.search(r" (malloc|free|calloc|realloc|_sbrk|printf)$", names, re.MULTILINE)


def test_board_fits_the_stm32f411re_and_starts_with_its_vector_table(built):
    out, _ = built
    elf = out / "nucleo-f411re" / "ecal_nucleo.elf"
    sizes = sections(elf)
    flash = sizes[".isr_vector"] + sizes[".text"] + sizes.get(".ARM.exidx", 0) + sizes[".data"]
    ram = sizes[".data"] + sizes[".bss"] + sizes[".noinit"] + sizes[".stack_reserve"]
    assert flash <= F411_FLASH[1] and ram <= F411_RAM[1], (flash, ram)
    headers = run(ARM + "objdump", "-h", elf)
    vector_at = re.search(r"\.isr_vector\s+[0-9a-f]+\s+([0-9a-f]+)", headers)
    assert vector_at and int(vector_at.group(1), 16) == F411_FLASH[0], headers
    symbols = {r[2]: int(r[0], 16) for r in (line.split() for line in run(ARM + "nm", elf).splitlines()) if len(r) == 3}
    image = (out / "nucleo-f411re" / "ecal_nucleo.bin").read_bytes()
    assert len(image) == flash
    words = struct.unpack_from("<102I", image)
    assert words[0] == symbols["_estack"] == F411_RAM[0] + F411_RAM[1]
    assert words[1] == symbols["Reset_Handler"] | 1  # Thumb bit set
    assert words[15] == symbols["SysTick_Handler"] | 1 and words[16 + 38] == symbols["USART2_IRQHandler"] | 1
    assert not {"malloc", "free", "_sbrk"} & set(symbols)
    assert {"ecl_rx_feed", "ect_open", "ect_find", "memcpy"} <= set(symbols)


needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-arm") is None,
                                reason="needs qemu-system-arm (Debian qemu-system-arm; scripts/ci-apt-arm-none-eabi)")  # fmt: skip


@needs_qemu
def test_c_tests_pass_on_an_emulated_cortex_m_that_traps_unaligned_access(tmp_path):
    """`make arm-check`: the link's and the table reader's known-answer tests, M0+ code on QEMU's
    Cortex-M4 with CCR.UNALIGN_TRP set (the table reader reads every table at offsets 0 to 3)."""
    done = subprocess.run(["make", "-C", str(ROOT), f"BUILD={tmp_path}", "arm-check"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    tables = sum(line.startswith("table ") for line in (ROOT / "vectors" / "ecal_tables.txt").read_text().splitlines())
    assert re.search(rf"^{tables} tables \d+ checks 0 failed$", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"^53 vectors, \d+ checks, 0 failed$", done.stdout, re.MULTILINE), done.stdout


def start_qemu(elf: Path) -> tuple[subprocess.Popen[str], int]:
    """The image on QEMU's netduinoplus2 (an STM32F405: the F411's USART2, SysTick and NVIC at
    the same addresses), USART2 on a TCP port that QEMU holds until a client connects."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    qemu = subprocess.Popen(
        ["qemu-system-arm", "-machine", "netduinoplus2", "-nographic", "-monitor", "none", "-serial", "null",
         "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on", "-kernel", str(elf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = qemu.stderr.readline()  # "... waiting for connection on ..." once it listens
    assert "waiting for connection" in line, line
    return qemu, port


@pytest.mark.slow
@needs_qemu
def test_board_image_streams_to_edgecal_and_accepts_its_table_under_qemu(built, tmp_path):
    from edgecal.table import CalibrationTable

    out, _ = built
    qemu, port = start_qemu(out / "nucleo-f411re" / "ecal_nucleo.elf")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "edgecal", "stream", "--port", f"socket://127.0.0.1:{port}", "--baud", "115200",
             "--samples", "200", "--out", str(tmp_path / "t.ecal"), "--push", "--timeout", "20", "-q"],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
    finally:
        qemu.kill()
        qemu.wait()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "streamed 200 complete samples" in done.stdout and "nucleo-f411re example 1" in done.stdout, done.stdout
    # The device accepts a push only after ect_open has validated the whole table on the Cortex-M4.
    assert re.search(r"pushed the table to the device: \d+ bytes, CRC-32 0x[0-9a-f]{8}, accepted", done.stdout)
    table = CalibrationTable.load(tmp_path / "t.ecal")
    assert list(table) == ["input", "logits"]
    inputs, logits = table["input"].stats, table["logits"].stats
    assert (inputs.samples, inputs.count, logits.count) == (200, 200 * 16, 200 * 4)
    assert -128 <= inputs.min < 0 < inputs.max <= 127  # random int8 inputs
    assert 0 < logits.max <= 0.01 * 16 * 5 * 128 and -0.01 * 16 * 5 * 128 <= logits.min < 0  # |w| <= 5
