"""The TSPD controller file loads without unpickling arbitrary objects (weights-only), round-trips, and the
shipped controller (saved with numpy scalars in its metrics) still loads."""
from __future__ import annotations

import builtins
import pickle

import numpy as np
import pytest
import torch

from decoder.policies.tspd import TspdController
from tests.support import ROOT


class _Payload:
    """Unpickling this calls open(sentinel, "w"): the file appears only if the loader ran code."""

    def __init__(self, sentinel: str) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return builtins.open, (self.sentinel, "w")


def test_a_malicious_controller_file_is_refused_without_running_it(tmp_path) -> None:
    sentinel = tmp_path / "pwned"
    good = TspdController()
    for i, write in enumerate([
        lambda p: torch.save({"state_dict": good.state_dict(), "features": [], "hidden": 32,
                              "metrics": _Payload(str(sentinel))}, p),               # torch's zip format
        lambda p: p.write_bytes(pickle.dumps({"state_dict": _Payload(str(sentinel))})),   # a bare pickle
    ]):
        path = tmp_path / f"evil{i}.pt"
        write(path)
        with pytest.raises(ValueError, match="refused: not a TSPD controller that loads without running code"):
            TspdController.load(str(path))
        assert not sentinel.exists()


def test_a_controller_round_trips_with_plain_metrics(tmp_path) -> None:
    torch.manual_seed(0)
    ctl = TspdController()
    path = tmp_path / "c.pt"
    ctl.save(str(path), {"validation": {"auc": np.float64(0.9), "n": np.int64(3)}, "epochs": 2})
    back = TspdController.load(str(path))
    assert back.metrics == {"validation": {"auc": 0.9, "n": 3}, "epochs": 2}
    assert type(back.metrics["validation"]["auc"]) is float
    assert torch.load(path, weights_only=True)["metrics"]["epochs"] == 2         # no allowances needed
    x = torch.randn(5, len(back.mean))
    assert torch.equal(back(x), ctl(x))


def test_the_shipped_controller_loads_weights_only() -> None:
    ctl = TspdController.load(str(ROOT / "embedded" / "taskmix" / "controller" / "tspd.pt"))
    assert ctl.metrics["parameters"] == sum(p.numel() for p in ctl.net.parameters())
