"""Is a checkpoint folder whole: its config.json readable and its weight files intact, read from the headers only.

A safetensors file is an 8-byte little-endian header length, a JSON header naming every tensor's dtype, shape
and `data_offsets` [begin, end) into the data that follows, then the data. `check_safetensors` reads the length
and the header (never the data) and checks that every tensor lies inside the file, has the byte size its dtype
and shape say, and that together they cover the data exactly (the safetensors loader refuses a buffer with
holes or trailing bytes): a truncated download or a copy cut short fails here, in milliseconds, naming the file.
`check_weight_files` does it for every safetensors file of a folder and checks that a sharded checkpoint's
`model.safetensors.index.json` names only files that exist. Pure file inspection: no torch, no transformers.
"""
from __future__ import annotations

import json
import math
import os

from decoder.families.checkpoint_safety import weight_files

#: Bytes per element of the safetensors dtypes (others are checked for bounds only).
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
               "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E4M3FNUZ": 1, "F8_E5M2": 1,
               "F8_E5M2FNUZ": 1, "F8_E8M0": 1, "C64": 8}
MAX_HEADER_BYTES = 100 << 20      # the safetensors format's own limit
INDEX_NAME = "model.safetensors.index.json"


class CheckpointIncomplete(ValueError):
    """A checkpoint file that is unreadable, truncated or missing; the message names the file and what is wrong."""


def read_config_json(path: str) -> dict:
    """config.json of a checkpoint folder as a dict, or CheckpointIncomplete saying why it is not one."""
    file = os.path.join(path, "config.json")
    try:
        with open(file, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointIncomplete(f"{file}: cannot be read ({type(e).__name__}: {e})") from None
    except json.JSONDecodeError as e:
        raise CheckpointIncomplete(f"{file}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(config, dict):
        raise CheckpointIncomplete(f"{file}: holds a {type(config).__name__}, not a JSON object")
    return config


def safetensors_header(file: str) -> tuple[dict, int]:
    """(header without __metadata__, bytes of tensor data after the header) of one safetensors file."""
    size = os.path.getsize(file)
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointIncomplete(f"{file}: truncated: {size} bytes, not even a header length")
        length = int.from_bytes(head, "little")
        if length > min(size - 8, MAX_HEADER_BYTES):
            raise CheckpointIncomplete(f"{file}: truncated or not safetensors: its header length says {length} "
                                       f"bytes, the file holds {size - 8} after it")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointIncomplete(f"{file}: unreadable safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointIncomplete(f"{file}: unreadable safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    return header, size - 8 - length


def check_safetensors(file: str) -> int:
    """Check one safetensors file's header against its size; returns its tensor count."""
    header, data = safetensors_header(file)
    end = 0
    for name, info in header.items():
        try:
            begin, stop = (int(x) for x in info["data_offsets"])
            shape, dtype = [int(d) for d in info["shape"]], str(info["dtype"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointIncomplete(f"{file}: tensor {name!r} has no valid dtype, shape and data_offsets in the "
                                       f"header") from None
        if not 0 <= begin <= stop <= data:
            raise CheckpointIncomplete(f"{file}: truncated: tensor {name!r} lies at bytes [{begin}, {stop}) of the "
                                       f"data, the file holds {data} bytes of data")
        if dtype in DTYPE_BYTES and stop - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise CheckpointIncomplete(f"{file}: tensor {name!r} ({dtype} {shape}) spans {stop - begin} bytes, "
                                       f"its shape needs {math.prod(shape) * DTYPE_BYTES[dtype]}")
        end = max(end, stop)
    if end != data:
        raise CheckpointIncomplete(f"{file}: its tensors cover {end} bytes of data, the file holds {data}: not a "
                                   f"whole safetensors file")
    return len(header)


def check_index(path: str) -> None:
    """A sharded checkpoint's index names only files that exist in the folder."""
    file = os.path.join(path, INDEX_NAME)
    if not os.path.exists(file):
        return
    try:
        with open(file, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointIncomplete(f"{file}: unreadable index ({type(e).__name__}: {e})") from None
    missing = [n for n in names if not os.path.isfile(os.path.join(path, n))]
    if missing:
        raise CheckpointIncomplete(f"{file} names {len(missing)} file(s) the folder lacks: "
                                   f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")


def check_weight_files(path: str) -> None:
    """Every safetensors file of the folder whole, its index consistent; a folder without weights refused."""
    safe, pickled = weight_files(path)
    if not safe and not pickled:
        raise CheckpointIncomplete(f"{path}: no weight files (*.safetensors) in the folder")
    check_index(path)
    for name in safe:
        check_safetensors(os.path.join(path, name))
