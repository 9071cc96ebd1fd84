"""Calibration on Dask equals one machine bit for bit: tables in several formats, states, shards, errors.

The cluster tests run on one LocalCluster of two single-threaded worker processes, so
states really cross a process boundary; the CLI reaches it by its scheduler address.
The shard and error pieces that run on workers are also tested in-process, and the
task graph (tree order, what crosses the wire) on an inline stand-in for the client.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
from edgecal import Calibrator
from edgecal import table as table_module
from edgecal.arrays import arrays_in, expand_inputs
from edgecal.cli import main
from edgecal.errors import InputError, UnknownNameError
from edgecal.file_state import file_state, shard_bounds, shard_histograms, state_of_shards
from edgecal.histogram import StreamingHistogram
from edgecal.identity import file_identity
from edgecal.merge import merge_states

BINS = 256


def run(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch):
    """Tables carry their creation time; byte-for-byte comparisons need one clock for both runs."""
    monkeypatch.setattr(table_module, "utc_now", lambda: "2026-01-01T00:00:00Z")


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


@pytest.fixture(scope="module")
def acts(tmp_path_factory) -> Path:
    """Numbered samples of one tensor, .npz batches, one tensor per .npy; ranges from 1e-6 to 1e6."""
    root = tmp_path_factory.mktemp("acts")
    rng = np.random.default_rng(7)
    for i in range(6):
        _save(root / "conv1" / f"{i:04d}.npy", (rng.standard_normal((4, 8)) * 10.0 ** (2 * i - 6)).astype(np.float32))
    for i in range(5):
        np.savez_compressed(root / f"batch{i}.npz", fc=rng.standard_normal((3, 5)) * 10.0 ** (-i),
                            relu=(np.maximum(rng.laplace(size=40), 0.0) * 10.0 ** (i - 2)).astype(np.float16))
    _save(root / "odd.npy", np.array([np.nan, -np.inf, 0.0, -3e5, 2.0]))
    _save(root / "ints.npy", rng.integers(-1000, 1000, size=(2, 3, 4)).astype(np.int32))
    return root


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """One large file: 101 samples, mostly small values, a few huge ones in the last rows."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((101, 37)).astype(np.float32) * 1e-3
    x[-2:, :5] = 4e4
    return _save(tmp_path_factory.mktemp("big") / "act.npy", x)


# -- shards of one file, in-process ---------------------------------------------------------
@pytest.mark.parametrize("shards", [1, 2, 3, 7, 150])
def test_shards_of_a_file_make_the_state_of_the_whole_file(big, acts, shards):
    for path in (big, acts / "batch2.npz", acts / "conv1" / "0003.npy", acts / "ints.npy"):
        parts = [shard_histograms(path, i, shards, BINS) for i in range(shards)]
        assert state_of_shards(parts, "k", BINS).to_bytes() == file_state(path, "k", BINS).to_bytes()


def test_a_shard_holds_whole_samples_and_its_histogram_is_the_naive_one(big):
    x = np.load(big)
    (array,) = arrays_in(big)
    for i in range(3):
        start, stop = shard_bounds(array, i, 3)
        assert start % 37 == 0 and stop % 37 == 0
        rows = x[start // 37 : stop // 37]
        (name, hist), = shard_histograms(big, i, 3, BINS)
        want = naive.lattice_histogram(rows, BINS)
        assert name == "act" and hist.count == rows.size
        assert hist.exponent == want["exponent"]
        assert hist.positive_counts().tolist() == want["positive"].tolist()
        assert hist.negative_counts().tolist() == want["negative"].tolist()
    assert [shard_bounds(array, i, 3) for i in range(3)] == [(0, 33 * 37), (33 * 37, 67 * 37), (67 * 37, 101 * 37)]


def test_a_range_of_values_reads_what_numpy_slices(tmp_path):
    x = np.asfortranarray(np.arange(60.0).reshape(6, 10))
    np.savez(tmp_path / "f.npz", a=x)
    for path in (_save(tmp_path / "c.npy", x), _save(tmp_path / "f.npy", x), tmp_path / "f.npz"):
        (array,) = arrays_in(path)
        flat = np.load(path)["a"] if path.suffix == ".npz" else np.load(path)
        flat = flat.ravel(order="F" if flat.flags.f_contiguous and not flat.flags.c_contiguous else "C")
        got = np.concatenate(list(array.chunks(chunk_bytes=24, start=13, stop=41)))
        assert got.tolist() == flat[13:41].tolist()
    with pytest.raises(InputError, match=r"values \[5, 61\) asked of 60"):
        list(array.chunks(start=5, stop=61))


def test_shard_errors_are_one_line(big):
    (array,) = arrays_in(big)
    with pytest.raises(InputError, match="shard 3 of 3; expected 0 <= shard < shards"):
        shard_bounds(array, 3, 3)
    a, b = [("x", StreamingHistogram(BINS))], [("y", StreamingHistogram(BINS))]
    with pytest.raises(InputError, match="shards of 'k' list different tensors"):
        state_of_shards([a, b], "k", BINS)
    with pytest.raises(InputError, match="histogram of 256 bins and 0 values; expected 256 bins and at least one"):
        Calibrator(BINS).observe_histogram("x", StreamingHistogram(BINS))


# -- the task graph, run in-process ------------------------------------------------------------
class _Done:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


_WIRE = (bytes, str, int)


def _plain(value) -> bool:
    """Whether ``value`` is what edgecal.dask may send or receive: bytes, text, integers, lists and tuples of them."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, _WIRE)


class InlineClient:
    """A stand-in for ``distributed.Client`` that runs each task as it is submitted, checking what would cross the
    wire (arguments and results) is plain data: the graph edgecal.dask builds, tested without a cluster."""

    def __init__(self) -> None:
        self.tasks: list[str] = []

    def submit(self, fn, *args, pure=True):
        values = [a.result() if isinstance(a, _Done) else a for a in args]
        assert _plain(values), f"{fn.__name__} would send {values!r}"
        out = fn(*values)
        assert _plain(out), f"{fn.__name__} would return {type(out).__name__}"
        self.tasks.append(fn.__name__)
        return _Done(out)

    def cancel(self, futures) -> None:
        pass


@settings(max_examples=40, deadline=None)
@given(plan=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(-40, 40), st.sampled_from(["a", "b", "ab", "ba"])),
                     min_size=1, max_size=9),
       shards=st.integers(1, 5))
@pytest.mark.needs_host  # LocalCluster starts worker processes (sys.executable)
def test_the_tree_of_file_states_is_the_left_fold_of_one_machine(tmp_path_factory, plan, shards):
    folder = tmp_path_factory.mktemp("plan")
    files = []
    for i, (seed, decade, names) in enumerate(plan):
        rng = np.random.default_rng(seed)
        arrays = {n: rng.standard_normal(int(rng.integers(1, 30))) * 10.0 ** (decade / 4) for n in names}
        np.savez(folder / f"f{i}.npz", **arrays)
        files.append(folder / f"f{i}.npz")
    from edgecal.dask import build_state

    client = InlineClient()
    got = build_state(client, files, bins=BINS, shards=shards)
    assert got.to_bytes() == merge_states(file_state(f, file_identity(f), BINS) for f in files).to_bytes()
    assert client.tasks.count("_merge_task") == len(files) - 1
    assert client.tasks.count("_shard_task") == (len(files) * shards if shards > 1 else 0)


# -- the CLI without the extra ---------------------------------------------------------------
def test_without_dask_the_cli_names_the_extra(acts, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    assert run("calibrate", acts, "-o", tmp_path / "t.json", "--dask", "local:2") == 2
    assert capsys.readouterr().err == ("edgecal: error: running on Dask needs dask[distributed] (distributed is "
                                       "missing); install it with: pip install -e '.[dask]'\n")
    assert not (tmp_path / "t.json").exists()


def test_shards_without_dask_is_an_error(acts, tmp_path, capsys):
    assert run("calibrate", acts, "-o", tmp_path / "t.json", "--shards", "2") == 2
    assert "edgecal: error: --shards 2: expected N >= 1, with --dask" in capsys.readouterr().err


def test_dask_with_a_model_is_an_error(acts, tmp_path, capsys):
    assert run("calibrate", "--model", "m.onnx", "--inputs", acts, "-o", tmp_path / "t.json", "--dask", "x:1") == 2
    assert "--dask calibrates activation files; expected no --model or --search" in capsys.readouterr().err


# -- on a cluster ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed", reason="needs the dask extra: pip install -e '.[dask]'")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                                  silence_logs=40) as c, distributed.Client(c) as client:
        yield c.scheduler_address, client


def _single(tmp_path: Path, inputs, out: str, *extra) -> tuple[bytes, bytes]:
    state, table = tmp_path / "one.ecst", tmp_path / f"one-{out}"
    assert run("calibrate", *inputs, "-o", table, "--state", state, "--bins", BINS, "-q", *extra) == 0
    return table.read_bytes(), state.read_bytes()


def _on_dask(tmp_path: Path, address: str, inputs, out: str, *extra) -> tuple[bytes, bytes]:
    state, table = tmp_path / "dask.ecst", tmp_path / f"dask-{out}"
    assert run("calibrate", *inputs, "-o", table, "--state", state, "--bins", BINS, "--dask", address, *extra) == 0
    return table.read_bytes(), state.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("out, extra", [("t.json", ()), ("t.ecal", ()), ("t.cache", ()), ("t.h", ()),
                                        ("t.json", ("-m", "percentile", "--scheme", "tflite")),
                                        ("t.ecal", ("-m", "mse"))])
@pytest.mark.needs_host  # LocalCluster starts worker processes (sys.executable)
def test_cli_on_dask_writes_the_single_machine_table_and_state(cluster, acts, tmp_path, capsys, out, extra):
    single = _single(tmp_path, [acts], out, *extra)
    assert _on_dask(tmp_path, cluster[0], [acts], out, *extra) == single
    assert f"on Dask ({cluster[0]})" in capsys.readouterr().out
    assert Calibrator.from_bytes(single[1]).names() == ["fc", "relu", "conv1", "ints", "odd"]


@pytest.mark.slow
@pytest.mark.needs_host  # LocalCluster starts worker processes (sys.executable)
def test_shards_on_dask_write_the_single_machine_state(cluster, acts, big, tmp_path):
    inputs = [big, acts / "batch1.npz", acts / "conv1"]
    single = _single(tmp_path, inputs, "t.json")
    assert _on_dask(tmp_path, cluster[0], inputs, "t.json", "--shards", "3") == single


@pytest.mark.slow
@pytest.mark.needs_host  # LocalCluster starts worker processes (sys.executable)
def test_resuming_a_state_on_dask_adds_only_new_files(cluster, acts, tmp_path, capsys):
    folder, both = tmp_path / "grow", tmp_path / "both"
    for i in range(3):
        _save(folder / "conv1" / f"{i:04d}.npy", np.load(acts / "conv1" / f"{i:04d}.npy"))
    first = _single(tmp_path, [folder], "t.json")[1]
    for i in range(3, 6):
        _save(folder / "conv1" / f"{i:04d}.npy", np.load(acts / "conv1" / f"{i:04d}.npy"))
    both.mkdir()
    (both / "dask.ecst").write_bytes(first)  # the state of the first three files, resumed on the cluster
    (both / "one.ecst").write_bytes(first)  # and on one machine
    capsys.readouterr()
    resumed = _on_dask(both, cluster[0], [folder], "t.json")
    assert "from 3 files, 3 already in" in capsys.readouterr().out
    assert resumed == _single(both, [folder], "t.json")
    assert Calibrator.from_bytes(resumed[1]).samples("conv1") == 6


@pytest.mark.slow
@pytest.mark.needs_host  # LocalCluster starts worker processes (sys.executable)
def test_python_api_returns_the_single_machine_state_and_table(cluster, acts, big):
    from edgecal.dask import calibrate_files

    files = expand_inputs([acts, big])
    want = merge_states(file_state(f, file_identity(f), BINS) for f in files)
    for shards in (1, 4):
        state, table = calibrate_files(cluster[1], [acts, big], method="kl", bins=BINS, shards=shards)
        assert state.to_bytes() == want.to_bytes()
        assert table == want.compute("kl")


def _damaged_npz(path: Path) -> Path:
    """A .npz whose headers read fine and whose data fails its CRC: found only by the worker reading it."""
    np.savez(path, good=np.ones(4), bad=np.arange(50000.0))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("bad.npy")
    raw[info.header_offset + 30 + len(info.filename) + 200_000] ^= 0xFF  # stored member: flip one data byte
    path.write_bytes(bytes(raw))
    arrays_in(path)  # the headers are intact
    return path


@pytest.mark.slow
@pytest.mark.needs_host  # LocalCluster starts worker processes (sys.executable)
def test_a_bad_file_on_a_worker_is_one_line_naming_it(cluster, acts, tmp_path, capsys):
    bad = _damaged_npz(tmp_path / "bad.npz")
    table, state = tmp_path / "t.json", tmp_path / "s.ecst"
    assert run("calibrate", acts, bad, "-o", table, "--state", state, "--dask", cluster[0]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"edgecal: error: {bad}[bad.npy]: damaged data (") and err.count("\n") == 1
    assert not table.exists() and not state.exists()
    from edgecal.dask import build_state

    with pytest.raises(InputError, match=r"bad\.npz\[bad\.npy\]: damaged data"):
        build_state(cluster[1], [bad], bins=BINS, shards=2)


def test_worker_errors_that_do_not_name_the_file_are_given_its_name(tmp_path):
    from edgecal.dask import _shards_task

    with pytest.raises(InputError, match=r"^/some/file\.npy: not an edgecal histogram: starts b'junk'"):
        _shards_task("/some/file.npy", "k", BINS, [("x", b"junk")])


def test_build_state_checks_its_arguments_before_any_work():
    pytest.importorskip("distributed", reason="needs the dask extra: pip install -e '.[dask]'")
    from edgecal.dask import build_state

    no_client = None  # nothing may be sent
    with pytest.raises(InputError, match="shards must be an integer >= 1, found 0"):
        build_state(no_client, ["x.npy"], shards=0)
    with pytest.raises(InputError, match="no input files; expected at least one"):
        build_state(no_client, [])
    with pytest.raises(InputError, match="bins must be a power of two"):
        build_state(no_client, ["x.npy"], bins=100)


def test_connect_refuses_a_bad_local_count_and_names_an_unreachable_scheduler():
    pytest.importorskip("distributed", reason="needs the dask extra: pip install -e '.[dask]'")
    from edgecal.dask import connect

    for address in ("local:0", "local:two"):
        with pytest.raises(InputError, match=f"--dask {address!r}: expected local, local:N with N >= 1"), \
                connect(address):
            pass
    with pytest.raises(InputError, match=r"cannot reach a Dask scheduler at 'tcp://127\.0\.0\.1:9'"), \
            connect("tcp://127.0.0.1:9", timeout=1.0):
        pass


@pytest.mark.slow
def test_cli_local_cluster_of_two_workers(acts, tmp_path):
    pytest.importorskip("distributed", reason="needs the dask extra: pip install -e '.[dask]'")
    assert _on_dask(tmp_path, "local:2", [acts], "t.ecal") == _single(tmp_path, [acts], "t.ecal")


@pytest.mark.slow
def test_a_bad_file_on_a_local_cluster_prints_one_line_and_nothing_from_the_workers(acts, tmp_path, capfd):
    pytest.importorskip("distributed", reason="needs the dask extra: pip install -e '.[dask]'")
    bad = _damaged_npz(tmp_path / "bad.npz")
    capfd.readouterr()
    assert run("calibrate", acts / "odd.npy", bad, "-o", tmp_path / "t.json", "--dask", "local:2") == 2
    out, err = capfd.readouterr()
    assert err == (f"edgecal: error: {bad}[bad.npy]: damaged data (Bad CRC-32 for file 'bad.npy'); expected an "
                   "intact .npy/.npz file\n") and out == ""


@pytest.mark.slow
@pytest.mark.needs_host  # LocalCluster starts worker processes (sys.executable)
def test_relative_paths_name_tensors_on_workers_as_on_one_machine(cluster, acts, tmp_path, monkeypatch):
    """The worker processes run elsewhere (their own folder): numbered files still take their folder's name."""
    monkeypatch.chdir(acts / "conv1")
    inputs = ["0000.npy", "0001.npy"]
    single = _single(tmp_path, inputs, "t.json")
    assert _on_dask(tmp_path, cluster[0], inputs, "t.json") == single
    assert Calibrator.from_bytes(single[1]).names() == ["conv1"]


@pytest.mark.needs_host  # LocalCluster starts worker processes (sys.executable)
def test_calibrate_files_refuses_a_bad_method_parameter_or_scheme_before_any_task(acts):
    from edgecal.dask import calibrate_files

    client = InlineClient()
    with pytest.raises(UnknownNameError, match="unknown method 'nope'"):
        calibrate_files(client, [acts], method="nope")
    with pytest.raises(InputError, match="percentile"):
        calibrate_files(client, [acts], method="percentile", percentile=120.0)
    with pytest.raises(InputError, match="unknown scheme 'wide'; known schemes: "):
        calibrate_files(client, [acts], scheme="wide")
    assert client.tasks == []
    state, table = calibrate_files(client, [acts / "odd.npy"], method="minmax", bins=BINS)
    assert client.tasks == ["_state_task"] and table["odd"].amax == 3e5 and state.samples("odd") == 1
