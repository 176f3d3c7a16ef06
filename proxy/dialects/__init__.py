"""Dialects: the LLM APIs shadowtap understands, and translation between them.

A dialect is one provider API (`openai-chat`, `openai-responses`, `anthropic-messages`,
`openai-embeddings`). For each, this package can parse a request into the neutral model
(`neutral.NeutralRequest`), render a neutral request back out, and read an answer (JSON or
SSE) into the shared `Completion`. A translation is parse in one dialect, render in another;
what has no faithful translation raises `Untranslatable` with a reason.

    from shadowtap.dialects import DIALECTS, Untranslatable, dialect_for_path, translate
"""

from shadowtap.dialects.neutral import NeutralRequest, RenderOptions, Untranslatable
from shadowtap.dialects.registry import (
    DIALECTS,
    Assembler,
    Dialect,
    dialect_for_path,
    translate,
)
from shadowtap.dialects.tables import target_headers

__all__ = [
    "DIALECTS",
    "Assembler",
    "Dialect",
    "NeutralRequest",
    "RenderOptions",
    "Untranslatable",
    "dialect_for_path",
    "target_headers",
    "translate",
]
