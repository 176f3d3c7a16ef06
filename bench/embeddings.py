"""How long do embeddings answers hold the event loop or the GIL? Reading them, and scoring.

`completion_from_json` holds the event loop if the proxy normalizes an answer on it (for large
answers, better in a thread); `embedding_agreement` runs in the scorer pool but holds the GIL
while it computes. Both are
bounded (MAX_VALUES numbers per answer; `max_work` multiply-adds per score); this script
measures what the bounds cost on this machine, for the shapes that cost the most:

* reading a 2048 x 1536 answer (3.1 M numbers) as base64 and as float JSON;
* scoring same-dimension batches (cosine) and different-dimension batches (neighbour ranks)
  that fill the default `max_work`.

    .venv/bin/python bench/embeddings.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import base64
import random
import statistics
import sys
import time
from array import array
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shadowtap.completion import Completion
from shadowtap.dialects.embeddings import completion_from_json
from shadowtap.scorers.base import Pair
from shadowtap.scorers.embedding_agreement import EmbeddingAgreement, EmbeddingAgreementOptions


def vectors(count: int, dim: int, seed: int) -> list[array[float]]:
    rng = random.Random(seed)
    return [array("f", [rng.gauss(0, 1) for _ in range(dim)]) for _ in range(count)]


def answer(vecs: list[array[float]], encoding: str) -> bytes:
    rows = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(v.tobytes()).decode()
            if encoding == "base64"
            else v.tolist(),
        }
        for i, v in enumerate(vecs)
    ]
    body = {
        "object": "list",
        "data": rows,
        "model": "m",
        "usage": {"prompt_tokens": 1, "total_tokens": 1},
    }
    return orjson.dumps(body)


def timed(repeat: int, call) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    print("reading an answer (completion_from_json), median ms:")
    batch = vectors(2048, 1536, 1)
    for encoding in ("base64", "float"):
        body = answer(batch, encoding)
        ms = timed(args.repeat, lambda body=body: completion_from_json(body, 200))
        print(f"  2048 x 1536 {encoding:>6}: {len(body) / 1e6:6.1f} MB  {ms:8.1f} ms")

    scorer = EmbeddingAgreement("e", EmbeddingAgreementOptions(type="embedding_agreement"))
    cases = [
        ("cosine, 1 x 3072", 1, 3072, 3072),
        ("cosine, 2048 x 1536 (capped)", 2048, 1536, 1536),
        ("neighbour ranks, 64 x 256 vs 384", 64, 256, 384),
        ("neighbour ranks, 2048 x 1536 vs 3072 (capped)", 2048, 1536, 3072),
    ]
    print(f"scoring one pair (max_work {scorer.options.max_work:,}), median ms:")
    for label, count, dim_a, dim_b in cases:
        a = Completion(status=200, embeddings=vectors(count, dim_a, 2))
        b = Completion(status=200, embeddings=vectors(count, dim_b, 3))
        pair = Pair(None, a, b, "candidate", "candidate")
        verdict = scorer.score(pair)
        ms = timed(args.repeat, lambda pair=pair: scorer.score(pair))
        detail = getattr(verdict, "detail", None) or {}
        kept = detail.get("pairs", detail.get("inputs"))
        print(f"  {label:<48} {ms:8.1f} ms  (compared {kept} of {count})")


if __name__ == "__main__":
    main()
