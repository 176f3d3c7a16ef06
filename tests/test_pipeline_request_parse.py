"""Scoring parses a sampled request on the event loop only for a scorer there that reads it (an
I/O scorer such as llm_judge): CPU scorers' workers are sent the body and parse it themselves,
so with only those configured the proxy never parses it again (a 1 MB prompt's parse allocates
~12 MB). Real fakes and a real judge on loopback; the parse is seen where `pipeline.score`
makes it (a profile hook on the event loop's thread), not mocked."""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

import orjson

from tests.conftest import StartFake, StartShadowtap, make_config
from tests.shadowing import drain, post, start_tie_judge


async def scoring_parses(start_shadowtap: StartShadowtap, config: dict[str, Any]) -> int:
    """How many times scoring parsed the request of one sampled chat request."""
    server = await start_shadowtap(config)
    parses: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call" and arg is orjson.loads and frame.f_code.co_name == "_request_object":
            parses.append(frame.f_code.co_filename)

    body = {"model": "m", "messages": [{"role": "user", "content": "question " * 1000}]}
    sys.setprofile(profile)
    try:
        assert (await post(server.proxy_port, body))[0] == 200
        await drain(server)
    finally:
        sys.setprofile(None)
    await server.stop()
    assert all(name.endswith("pipeline.py") for name in parses)
    return len(parses)


async def test_cpu_scorers_alone_never_make_the_proxy_parse_the_request_again(
    start_fake: StartFake, start_shadowtap: StartShadowtap
) -> None:
    primary, candidate = await start_fake(), await start_fake()
    scorers = {"similarity": {"type": "text_similarity"}, "exact": {"type": "exact_match"}}
    config = make_config(primary, {"small": candidate}, scorers=scorers)
    assert await scoring_parses(start_shadowtap, config) == 0


async def test_an_io_scorer_gets_the_request_parsed_on_the_loop(
    start_fake: StartFake, start_shadowtap: StartShadowtap, aiohttp_server: Any
) -> None:
    primary, candidate = await start_fake(), await start_fake()
    judge = {"type": "llm_judge", "url": await start_tie_judge(aiohttp_server), "model": "judge"}
    config = make_config(primary, {"small": candidate}, scorers={"judge": judge})
    assert await scoring_parses(start_shadowtap, config) == 1
