"""service/stats.py leaves to the libraries what they already do: Benjamini–Hochberg is scipy's."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from neuronmap.service.stats import adjust_pvalues


def test_benjamini_hochberg_is_scipys_false_discovery_control(monkeypatch):
    calls = []
    original = scipy.stats.false_discovery_control

    def spy(ps, *args, **kwargs):
        calls.append(np.asarray(ps).copy())
        return original(ps, *args, **kwargs)

    monkeypatch.setattr(scipy.stats, "false_discovery_control", spy)
    p = np.array([0.01, 0.04, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 → ×4/1, ×4/2, ×4/3, ×4/4, then the step-up minimum from the top
    assert adjust_pvalues(p, "bh") == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert len(calls) == 1 and calls[0].tolist() == p.tolist()


def test_benjamini_hochberg_keeps_its_edge_cases():
    assert adjust_pvalues([], "bh").shape == (0,)
    assert adjust_pvalues([0.0, 1.0, 1.0], "bh").tolist() == [0.0, 1.0, 1.0]
    rng = np.random.default_rng(0)
    p = rng.uniform(size=50) ** 3
    adjusted = adjust_pvalues(p, "bh")
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0) and np.all(adjusted >= p) and np.all(adjusted <= 1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_pvalues([0.5, np.nan], "bh")
