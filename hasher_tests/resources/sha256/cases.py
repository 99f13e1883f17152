"""Inputs shared by the kernel tests: the DESIGN §4.2 test vector and random rows."""

import numpy as np

VECTOR_SLOTS = np.array([[((i + 1) * 0x11111111) & 0xFFFFFFFF for i in range(12)]], dtype=np.uint32)
VECTOR_SEED = np.array([[*range(16), *([0] * 12), 0x1C, 0x1D, 0x1E, 0x1F]], dtype=np.uint8)
#: The vector's golden is 0x18867801; the token it stands for is its top 17 bits (DESIGN §4.3).
VECTOR_GOLDEN = 0x18867801
VECTOR_TOKEN = VECTOR_GOLDEN >> 15


def random_rows(n: int, seed: int = 0, *, edges: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random (slots, seeds) rows; ``edges`` makes the first three all-zero / all-ones cases."""
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, 2**32, (n, 12), dtype=np.uint32)
    seeds = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    if edges:  # all-zero and all-ones slots, with all-zero and all-ones seeds
        slots[0], slots[1], slots[2] = 0, 0xFFFFFFFF, 0xFFFFFFFF
        seeds[0], seeds[1], seeds[2] = 0, 0xFF, 0
    return slots, seeds
