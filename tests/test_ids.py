"""Request ids: RFC 9562 UUIDv7, unique and ordered by time."""

from __future__ import annotations

import time
import uuid

from shadowtap.ids import uuid7


def test_uuid7_shape_uniqueness_and_order() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    now_ms = time.time_ns() // 1_000_000
    stamps = [u.int >> 80 for u in parsed]
    assert stamps == sorted(stamps) and abs(stamps[-1] - now_ms) < 5_000
    assert all(str(u) == i for u, i in zip(parsed, ids, strict=True))  # the canonical text
