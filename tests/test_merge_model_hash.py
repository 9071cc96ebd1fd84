"""Merging states: a state with no model hash cannot prove it holds the same model's tensors."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edgecal import Calibrator
from edgecal.errors import InputError


def _cal(model_hash, names=("conv1", "fc1"), seed=0):
    cal = Calibrator(model_hash=model_hash)
    rng = np.random.default_rng(seed)
    for name in names:
        cal.observe(name, rng.standard_normal(64))
    return cal


@pytest.mark.parametrize("first, second", [("sha256:aa", None), (None, "sha256:aa")])
def test_a_state_without_a_hash_merged_with_a_hashed_one_warns(caplog, first, second):
    with caplog.at_level(logging.WARNING, logger="edgecal"):
        merged = _cal(first).merge(_cal(second, seed=1))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "without a model hash" in lines[0] and "sha256:aa" in lines[0] and "2 tensors" in lines[0]
    assert merged.model_hash == "sha256:aa" and merged.samples("conv1") == 2


@pytest.mark.parametrize("first, second, names", [("sha256:aa", "sha256:aa", ("conv1",)), (None, None, ("conv1",)),
                                                  ("sha256:aa", None, ("other",))])
def test_no_warning_when_both_sides_agree_or_share_no_tensor(caplog, first, second, names):
    with caplog.at_level(logging.WARNING, logger="edgecal"):
        _cal(first).merge(_cal(second, names=names, seed=1))
    assert caplog.records == []


def test_different_hashes_are_still_refused():
    with pytest.raises(InputError, match="different models"):
        _cal("sha256:aa").merge(_cal("sha256:bb"))
