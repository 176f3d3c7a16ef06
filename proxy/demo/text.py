"""The simulated models' language: canned-but-plausible sentences built from the prompt's words.

Everything here is a pure function of its inputs (a digest of the request and, for the noise, a
`random.Random` the caller owns), so the same request gives the same base answer on every
simulated model; profiles differ only in how they *reword* it. That is what makes the demo's
verdicts predictable: agreement is decided by the rewording, not by luck.
"""

from __future__ import annotations

import hashlib
import random
import re

import orjson

_STOP = """a an and are as at be but by can could do does for from give has have how i if in into is
    it its me my of on or our please should so that the their then there these this to up us use
    using was we what when where which while who why will with would you your about explain
    describe tell short briefly write summarize list between vs versus make one two three some
    return json keys key object answer reply classify extract details following given text
    based ticket support customer message practical tips checklist reviewing biggest risks
    production main trade-offs debug slow performance related engineer team new working"""
STOPWORDS = frozenset(_STOP.split())

# Each template names two or three of the prompt's keywords ({a}, {b}, {c}) so answers stay on
# topic; a digest picks which templates and in what order.
TEMPLATES = (
    "{A} mostly comes down to how {b} and {c} interact.",
    "The key point is that {a} depends on {b} more than most people expect.",
    "In practice, teams often start with {b} and only later tune {a}.",
    "A common mistake is to treat {a} and {c} as the same problem.",
    "It helps to measure {b} first, because {a} is hard to judge without data.",
    "For most workloads, a simple approach to {a} works well enough.",
    "The trade-off is usually between {b} and {c}.",
    "If {a} becomes a bottleneck, look at {c} before changing anything else.",
    "Good defaults for {b} make {a} much easier to reason about.",
    "Over time, {c} tends to matter more than the initial choice of {a}.",
    "A small example makes {a} clearer: change {b} and watch how {c} responds.",
    "Documentation on {a} often skips how {b} fails under load.",
    "The important thing is to keep {b} simple and observable.",
    "Most problems with {a} show up first as changes in {c}.",
)

OPENERS = ("Sure.", "Here is a short overview.", "Good question.")
CLOSERS = (
    "Let me know if you want a deeper dive into {a}.",
    "In short, start simple and measure {b}.",
)

# Word-level synonyms: the primary's occasional rewording (the noise floor) swaps one or two;
# the paraphrasing profile swaps all of them and restructures sentences.
SYNONYMS = {
    "mostly": "largely",
    "key": "main",
    "often": "frequently",
    "start": "begin",
    "later": "afterwards",
    "common": "frequent",
    "mistake": "error",
    "helps": "is useful",
    "first": "up front",
    "hard": "difficult",
    "simple": "straightforward",
    "works": "performs",
    "usually": "typically",
    "becomes": "turns into",
    "look": "glance",
    "changing": "altering",
    "Good": "Sensible",
    "easier": "simpler",
    "tends": "is likely",
    "matter": "count",
    "clearer": "easier to see",
    "watch": "observe",
    "skips": "leaves out",
    "important": "essential",
    "keep": "leave",
    "problems": "issues",
    "show": "appear",
    "expect": "assume",
    "interact": "work together",
    "much": "far",
    "deeper": "closer",
    "short": "brief",
}

WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]*")
TOKEN = re.compile(r"\w+|[^\w\s]")


def digest(*parts: object) -> int:
    """A stable 64-bit digest of JSON-able parts (Python's hash() is salted per process)."""
    blob = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big")


def count_tokens(text: str) -> int:
    """A rough tokenizer (words and punctuation) — close enough to make usage numbers plausible."""
    return len(TOKEN.findall(text))


def keywords(text: str, count: int = 3) -> list[str]:
    """The prompt's content words, longest first, padded with generic words when it has few."""
    seen: list[str] = []
    for word in WORD.findall(text):
        lower = word.lower()
        if lower not in STOPWORDS and len(lower) > 2 and lower not in seen:
            seen.append(lower)
    seen.sort(key=len, reverse=True)
    padding = ["the design", "the workload", "the data", "latency", "cost"]
    return (seen + [p for p in padding if p not in seen])[:count]


def _fill(template: str, words: list[str]) -> str:
    a, b, c = words[0], words[1], words[2]
    return template.format(a=a, b=b, c=c, A=a[:1].upper() + a[1:])


def compose(prompt: str, seed: int, sentences: int | None = None) -> list[str]:
    """The base answer for a prompt: 3-6 sentences chosen and ordered by `seed`."""
    pick = random.Random(seed)
    words = keywords(prompt)
    n = sentences or pick.randint(3, 6)
    chosen = pick.sample(range(len(TEMPLATES)), k=min(n, len(TEMPLATES)))
    body = [_fill(TEMPLATES[i], pick.sample(words, k=3)) for i in chosen]
    if pick.random() < 0.3:
        body.insert(0, pick.choice(OPENERS))
    if pick.random() < 0.3:
        body.append(_fill(pick.choice(CLOSERS), words))
    return body


def reword(sentence: str, rng: random.Random, swaps: int | None = 1) -> str:
    """Replace `swaps` synonym-able words (None: all of them) — same meaning, other words."""
    words = sentence.split(" ")
    spots = [i for i, w in enumerate(words) if w.strip(".,:") in SYNONYMS]
    if swaps is not None:
        spots = rng.sample(spots, k=min(swaps, len(spots)))
    for i in spots:
        bare = words[i].strip(".,:")
        words[i] = words[i].replace(bare, SYNONYMS[bare])
    if not spots and swaps is not None:
        # Nothing to swap: vary the sentence's ending instead so the noise is never a no-op.
        return sentence.rstrip(".") + ", in most cases."
    return " ".join(words)


def add_noise(sentences: list[str], rng: random.Random) -> list[str]:
    """The primary's run-to-run variation: one sentence reworded slightly."""
    out = list(sentences)
    i = rng.randrange(len(out))
    out[i] = reword(out[i], rng, swaps=rng.randint(1, 2))
    return out


def paraphrase(sentences: list[str], rng: random.Random) -> list[str]:
    """A different model's take on the same content: every word swapped, order shuffled, an
    extra hedge and a different opener — recognisably the same answer, clearly other words."""
    body = [reword(s, rng, swaps=None) for s in sentences if s not in OPENERS]
    rng.shuffle(body)
    if len(body) > 3 and rng.random() < 0.5:
        body.pop()  # a shorter answer
    body.insert(0, rng.choice(("Happy to help!", "Let's break this down.", "Great question.")))
    body.append("Of course, the details depend on your specific situation and constraints.")
    return body


def refusal(rng: random.Random, paraphrased: bool) -> str:
    if paraphrased:
        return rng.choice(
            (
                "Sorry, but I won't assist with this request.",
                "I'm unable to provide help with that, as it could cause harm.",
            )
        )
    return "I'm sorry, but I can't help with that request."
