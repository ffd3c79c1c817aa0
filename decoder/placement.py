"""Where a model's weights go: one device, or split layer by layer over several (a model larger than one GPU).

A decode actor that Ray gives several GPUs (`actors.num_gpus > 1`) sees them all as `cuda:0..n-1`; with
`model.device_map: auto` the model is split over them by transformers' `device_map` (accelerate's hooks move
each layer's inputs to that layer's device and return the outputs to the first one), so the engines, which
read `adapter.device` (the device of the first weights), need no change. Splitting is pure placement: the
same forwards run, layer by layer, so outputs equal the unsplit model's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: device_map strategies transformers accepts by name (accelerate computes the split).
STRATEGIES = ("balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class Placement:
    device: str                         # the whole model's device, or where inputs go when split
    device_map: str | dict | None = None  # None: the whole model on `device`
    offload_folder: str | None = None     # where layers mapped to "disk" are kept

    @property
    def split(self) -> bool:
        return self.device_map is not None

    def load_kwargs(self) -> dict[str, Any]:
        """What `from_pretrained` takes for this placement (nothing when the model is moved as a whole)."""
        if not self.split:
            return {}
        kwargs: dict[str, Any] = {"device_map": self.device_map}
        if self.offload_folder:
            kwargs["offload_folder"] = self.offload_folder
        return kwargs

    def place(self, model):
        """The loaded model on its device: moved when whole; left where `from_pretrained` dispatched it when split."""
        return model if self.split else model.to(self.device)


def resolve_placement(device: str = "auto", device_map: str | dict = "auto", cuda_devices: int = 0,
                      offload_folder: str | None = None) -> Placement:
    """The placement for a device name ("auto": cuda when present), a device_map setting and the number of CUDA
    devices visible to this process.

    device_map: "auto" splits over the visible GPUs when there are several and the device is plain "cuda" (a
    pinned "cuda:N" or "cpu" stays whole); "none" never splits; a strategy name ("balanced", "balanced_low_0",
    "sequential") or an explicit {module: device} dict is passed to transformers as is.
    """
    if device == "auto":
        device = "cuda" if cuda_devices else "cpu"
    if isinstance(device_map, dict):
        return Placement(_first_device(device_map, device), dict(device_map), offload_folder)
    if device_map == "none":
        return Placement(device)
    if device_map == "auto":
        if device == "cuda" and cuda_devices > 1:
            return Placement("cuda:0", "balanced", offload_folder)
        return Placement(device)
    if device_map in STRATEGIES:
        return Placement("cuda:0" if device.startswith("cuda") else device, device_map, offload_folder)
    raise ValueError(f"unknown device_map {device_map!r}; valid: auto, none, {', '.join(STRATEGIES)} "
                     "(or a {module: device} mapping from Python)")


def _first_device(device_map: dict, default: str) -> str:
    """Inputs go where the first mapped module (the embeddings, in model order) lives; disk-offloaded layers
    run on the CPU."""
    for where in device_map.values():
        where = str(where)
        if where == "disk":
            return "cpu"
        return f"cuda:{where}" if where.isdigit() else where
    return default
