"""The serial source over the C example device (a real process on a pty or TCP): samples are the
device's intact tensors grouped by sample, as its --dump mode and --truth log say."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from edgecal.errors import InputError
from edgecal.link.build import compiler
from edgecal.sources import SerialLinkSource, SourceError, SourceExhausted

from link_helpers import NAMES, Device, dump, read_truth

pytestmark = [pytest.mark.skipif(compiler() is None, reason="needs gcc to build the example device"),
              pytest.mark.needs_host]  # builds and runs C programs with the host gcc


@pytest.fixture
def device(exe, tmp_path):
    started = []

    def start(*args, transport="pty"):
        dev = Device(exe, [str(a) for a in args], tmp_path / f"truth{len(started)}.txt", transport)
        started.append(dev)
        return dev

    yield start
    for dev in started:
        dev.close()


def drain(src: SerialLinkSource, reopen: bool = False, limit: float = 30.0) -> list[dict]:
    """Every sample until the device has no more; reopens after a SourceError when asked (as the daemon)."""
    samples, deadline = [], time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            sample = src.read(0.2)
        except SourceExhausted:
            return samples
        except SourceError:
            if not reopen:
                raise
            time.sleep(0.1)
            src.open()
            continue
        if sample is not None:
            samples.append(sample.arrays)
    raise AssertionError("the device did not finish in time")


def by_bytes(exe, inputs: int) -> dict[tuple[str, bytes], int]:
    """(tensor, bytes) -> the input it belongs to, from the device's --dump (no link in between)."""
    return {(name, a.tobytes()): i for i, s in enumerate(dump(exe, 0, inputs)) for name, a in s.items()}


def test_every_sample_holds_the_tensors_of_one_inference(exe, device):
    dev = device("--count", 12)
    src = SerialLinkSource(url=dev.url, timeout=5)
    src.open()
    try:
        samples = drain(src)
    finally:
        src.close()
    reference = dump(exe, 0, 12)
    assert len(samples) == 12
    for got, want in zip(samples, reference):
        assert list(got) == NAMES
        assert all(got[n].dtype == want[n].dtype and np.array_equal(got[n], want[n]) for n in NAMES)
    stats = src.stats()
    assert (stats["samples"], stats["samples_partial"], stats["tensors_used"], stats["tensors_discarded"]) == (12, 0, 60, 0)
    assert len(src.model_hash()) == 32 and SerialLinkSource.LIVE


def test_a_tensor_subset_and_faults_on_the_wire(exe, device):
    dev = device("--count", 30, "--seed", 4, "--flip-every", 7, "--dup-every", 11, "--junk-every", 13)
    src = SerialLinkSource(url=dev.url, tensors=["conv1_relu", "fc1", "logits"])
    src.open()
    try:
        samples = drain(src)
    finally:
        src.close()
    truth = read_truth(dev.truth)
    assert truth.damaged  # the run really lost tensors
    owner = by_bytes(exe, 30)
    delivered = Counter()
    for sample in samples:
        assert set(sample) <= {"conv1_relu", "fc1", "logits"}
        inputs = {owner[(n, a.tobytes())] for n, a in sample.items()}
        assert len(inputs) == 1  # never two inferences in one sample
        (i,) = inputs
        delivered.update((i, NAMES.index(n)) for n in sample)
    assert delivered == Counter(truth.intact)
    stats = src.stats()
    assert stats["tensors_used"] == len(truth.intact) and stats["tensors_discarded"] == len(truth.damaged)
    assert stats["samples_partial"] > 0 and stats["frames_duplicate"] == truth.faults["dup"]


def test_a_device_that_drops_the_link_is_reopened_by_the_caller(exe, device):
    dev = device("--count", 25, "--unplug-at", 5, transport="tcp")
    src = SerialLinkSource(url=dev.url, reconnect_timeout=0)  # no reconnection inside: SourceError at once
    src.open()
    try:
        samples = drain(src, reopen=True)
    finally:
        src.close()
    truth = read_truth(dev.truth)
    owner = by_bytes(exe, 25)
    delivered = Counter((owner[(n, a.tobytes())], NAMES.index(n)) for s in samples for n, a in s.items())
    assert len(truth.boots) == 2 and delivered == Counter(truth.intact)
    assert src.stats()["reopens"] == 1 and src.stats()["reconnects"] == 1


def test_ports_that_fail_are_source_errors_and_another_model_is_refused(exe, device, tmp_path):
    with pytest.raises(SourceError, match="no such device"):
        SerialLinkSource(url=str(tmp_path / "ttyNONE")).open()
    with pytest.raises(SourceError, match="no answer at 921600 baud"):
        SerialLinkSource(url="loop://", timeout=0.3).open()  # echoes its own HELLO: nothing answers
    with pytest.raises(InputError, match="device has no tensor 'nope'"):
        SerialLinkSource(url=device("--count", 3).url, tensors=["nope"]).open()
    src = SerialLinkSource(url=device("--count", 3).url)
    src.open()
    first = src.model_hash()
    src.close()
    src._device = ("0" * 32, src._device[1])  # as if the first handshake had been with another model
    src.link = SerialLinkSource(url=device("--count", 3).url).link
    with pytest.raises(InputError, match=f"now runs model {first} with 5 tensors; expected model {'0' * 32}"):
        src.open()
