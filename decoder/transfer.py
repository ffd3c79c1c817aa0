"""Transfer schedules: how many tokens a row commits at each step of a block (LLaDA's even split, Dream's
linspace(1, eps, steps + 1) rule), and a row's answer layout (length rounded up to whole blocks)."""
from __future__ import annotations


def num_transfer_tokens(masked: int, steps: int) -> list[int]:
    """Split `masked` tokens evenly over `steps`, the remainder going to the earliest steps."""
    if steps <= 0:
        raise ValueError("steps must be positive")
    base, rem = divmod(masked, steps)
    return [base + (1 if i < rem else 0) for i in range(steps)]


def dream_transfer_tokens(masked: int, steps: int, eps: float) -> list[int]:
    """Dream's rule over `steps` steps: with timesteps linspace(1, eps, steps + 1) (float32, as Dream computes
    them), step i commits int(n_i * (1 - s / t)) of the n_i still masked, and all remaining at the last step."""
    import torch  # here, not at the top: the host stages import this module without torch

    if steps <= 0:
        raise ValueError("steps must be positive")
    ts = torch.linspace(1, eps, steps + 1)
    plan, left = [], masked
    for i in range(steps):
        k = left if i == steps - 1 else int(torch.tensor(float(left)) * (1 - ts[i + 1] / ts[i]))
        plan.append(k)
        left -= k
    return plan


def blocks_of(gen_length: int, block_length: int) -> int:
    """Whole blocks an answer of `gen_length` tokens occupies (the last may be partly EOS-fixed)."""
    return -(-gen_length // block_length)


def validate_schedule(gen_length: int, block_length: int, steps: int) -> int:
    """Check LLaDA's rule (steps a multiple of the number of blocks, gen_length rounded up to whole blocks);
    returns steps per block."""
    if gen_length <= 0 or block_length <= 0 or steps <= 0:
        raise ValueError(f"gen_length ({gen_length}), block_length ({block_length}) and steps ({steps}) must be positive")
    blocks = blocks_of(gen_length, block_length)
    if steps % blocks:
        raise ValueError(f"steps ({steps}) must be a multiple of the number of blocks ({blocks} = "
                         f"ceil(gen_length / block_length))")
    return steps // blocks


def row_schedule(gen_length: int, block_length: int, steps: int, row_gen_length: int | None) -> tuple[int, int]:
    """(answer tokens, step budget) of a row that may override gen_length; keeps steps per block fixed. The
    row occupies whole blocks: blocks_of(answer tokens) * block_length positions, those past its answer
    tokens fixed to EOS."""
    per_block = validate_schedule(gen_length, block_length, steps)
    g = gen_length if row_gen_length is None else int(row_gen_length)
    if g <= 0:
        raise ValueError(f"max_new_tokens {g} must be positive")
    return g, per_block * blocks_of(g, block_length)
