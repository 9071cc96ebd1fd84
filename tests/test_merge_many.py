"""Merging thousands of states: equal to a pairwise fold and to the naive histogram, two states alive at a time."""

from __future__ import annotations

import functools
import weakref

import numpy as np
import pytest

import naive
from edgecal import Calibrator
from edgecal.cli import main as run
from edgecal.errors import InputError
from edgecal.merge import merge_state_files, merge_states

BINS = 16
N_STATES = 2000


def _values(i: int) -> dict[str, np.ndarray]:
    """Tensor values of state ``i``: ranges from 1e-6 to 1e6 so the lattices differ a lot between states."""
    rng = np.random.default_rng(i)
    scale = 10.0 ** rng.integers(-6, 7)
    out = {"wide": (rng.standard_normal(5) * scale).astype(np.float32)}
    if i % 3 == 0:  # a tensor only some states hold, first seen in state 0
        out["relu"] = np.maximum(rng.standard_normal(4), 0.0) * scale
    if i == 7:
        out["late"] = np.array([0.0, -2.5, np.nan])  # a tensor first seen late keeps its place last
    return out


def _state(i: int) -> Calibrator:
    cal = Calibrator(BINS)
    cal.observe_many(_values(i))
    cal.consumed.add(f"input-{i}")
    return cal


@pytest.fixture(scope="module")
def state_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("states")
    paths = [folder / f"{i:04d}.ecst" for i in range(N_STATES)]
    for i, path in enumerate(paths):
        path.write_bytes(_state(i).to_bytes())
    return paths


@pytest.fixture(scope="module")
def merged(state_files):
    return merge_state_files(state_files)


def test_many_states_merge_to_the_pairwise_fold(state_files, merged):
    fold = functools.reduce(lambda a, b: a.merge(b), (Calibrator.load_state(p) for p in state_files))
    assert merged.to_bytes() == fold.to_bytes()
    assert merged.names() == ["wide", "relu", "late"]
    assert len(merged.consumed) == N_STATES


@pytest.mark.parametrize("name", ["wide", "relu", "late"])
def test_many_states_merge_to_the_naive_histogram_of_all_values(merged, name):
    values = [v[name] for v in map(_values, range(N_STATES)) if name in v]
    want = naive.lattice_histogram(np.concatenate([v.astype(np.float64) for v in values]), BINS)
    h = merged.histogram(name)
    assert h.exponent == want["exponent"]
    assert h.positive_counts().tolist() == want["positive"].tolist()
    assert h.negative_counts().tolist() == want["negative"].tolist()
    assert (h.count, h.zeros, h.nans, h.min, h.max) == (want["count"], want["zeros"], want["nans"], want["min"],
                                                         want["max"])
    assert merged.samples(name) == len(values)


def test_merge_holds_at_most_two_states_at_a_time(state_files):
    alive: set[int] = set()
    most = 0

    def load(path):
        nonlocal most
        cal = Calibrator.load_state(path)
        alive.add(id(cal))
        weakref.finalize(cal, alive.discard, id(cal))
        most = max(most, len(alive))
        return cal

    merge_state_files(state_files[:300], load=load)
    assert most == 2


def test_the_instrumented_loader_sees_a_list_of_states_held_at_once(state_files):
    """The counter above is able to fail: loading every state first (the old merge) counts them all."""
    alive: set[int] = set()

    def load(path):
        cal = Calibrator.load_state(path)
        alive.add(id(cal))
        weakref.finalize(cal, alive.discard, id(cal))
        return cal

    held = [load(p) for p in state_files[:50]]
    assert len(alive) == 50
    merge_states(held)


def test_cli_merge_of_thousands_of_files_writes_the_fold(state_files, merged, tmp_path, capsys):
    out = tmp_path / "all.ecst"
    assert run(["merge", *map(str, state_files), "-o", str(out)]) == 0
    assert out.read_bytes() == merged.to_bytes()
    assert f"merged {N_STATES} states (3 tensors)" in capsys.readouterr().out


def test_merge_error_names_the_state_that_cannot_be_merged(state_files, tmp_path, capsys):
    odd = tmp_path / "odd.ecst"
    Calibrator(32).save_state(odd)
    out = tmp_path / "m.ecst"
    assert run(["merge", str(state_files[0]), str(state_files[1]), str(odd), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"edgecal: error: {odd}: cannot merge calibrators with {BINS} and 32 bins")
    assert not out.exists()


def test_merge_of_a_state_twice_names_it(state_files, tmp_path, capsys):
    assert run(["merge", str(state_files[3]), str(state_files[3]), "-o", str(tmp_path / "m.ecst")]) == 2
    assert f"edgecal: error: {state_files[3]}: both states already contain input 'input-3'" in capsys.readouterr().err


def test_no_states_is_an_error():
    with pytest.raises(InputError, match="no states to merge"):
        merge_states([])
    with pytest.raises(InputError, match="no states to merge"):
        merge_state_files([])
