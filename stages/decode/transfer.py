"""LLaDA's transfer schedule: how many tokens a row commits at each step of a block."""
from __future__ import annotations


def num_transfer_tokens(masked: int, steps: int) -> list[int]:
    """Split `masked` tokens evenly over `steps`, the remainder going to the earliest steps."""
    if steps <= 0:
        raise ValueError("steps must be positive")
    base, rem = divmod(masked, steps)
    return [base + (1 if i < rem else 0) for i in range(steps)]


def validate_schedule(gen_length: int, block_length: int, steps: int) -> int:
    """Check LLaDA's divisibility rules; returns steps per block."""
    if gen_length <= 0 or block_length <= 0 or steps <= 0:
        raise ValueError(f"gen_length ({gen_length}), block_length ({block_length}) and steps ({steps}) must be positive")
    if gen_length % block_length:
        raise ValueError(f"gen_length ({gen_length}) must be a multiple of block_length ({block_length})")
    blocks = gen_length // block_length
    if steps % blocks:
        raise ValueError(f"steps ({steps}) must be a multiple of the number of blocks ({blocks} = gen_length / block_length)")
    return steps // blocks


def row_schedule(gen_length: int, block_length: int, steps: int, row_gen_length: int | None) -> tuple[int, int]:
    """(answer length, step budget) of a row that may override gen_length; keeps steps per block fixed."""
    per_block = validate_schedule(gen_length, block_length, steps)
    g = gen_length if row_gen_length is None else int(row_gen_length)
    if g <= 0 or g % block_length:
        raise ValueError(f"max_new_tokens {g} must be a positive multiple of block_length {block_length}")
    return g, per_block * (g // block_length)
