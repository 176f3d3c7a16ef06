"""Request ids and stable hashes.

UUIDv7 request ids are time-ordered, so DuckDB rows sort by arrival (RFC 9562 §5.7);
`unit_hash` maps a string to [0, 1) the same way in every process, for sticky sampling
decisions (the proxy's per request, the scorers' per exchange).
"""

from __future__ import annotations

import hashlib
import random
import time


def uuid7() -> str:
    unix_ms = time.time_ns() // 1_000_000
    # Ids must be unique, not secret: the Mersenne Twister avoids a getrandom() syscall.
    rand = random.getrandbits(80)
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b
    # What str(uuid.UUID(int=value)) writes, without building the UUID object (half the cost).
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def unit_hash(text: str) -> float:
    """A number in [0, 1) from `text`, stable across processes and runs."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
