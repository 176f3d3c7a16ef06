"""`[scorers.NAME]`: each table resolved at load, through the scorer registry, into a
`ScorerSpec` — the scorer class its `type` names and its options, validated by that class's
`Options` model. Later code builds scorers from specs and never reads the TOML tables again:

    [scorers.similarity]            config.scorers["similarity"] == ScorerSpec(
    type = "text_similarity"            name="similarity", kind="text_similarity",
    threshold = 0.6                     factory=TextSimilarity,
                                        options=TextSimilarityOptions(threshold=0.6, ...))

The registry is imported only when a config has scorers, so loading a config without any
loads no scorer module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, GetCoreSchemaHandler, SerializationInfo
from pydantic_core import core_schema

if TYPE_CHECKING:
    from shadowtap.scorers.base import Scorer, ScorerOptions


@dataclass(frozen=True, slots=True)
class ScorerSpec:
    """One resolved `[scorers.NAME]` table. `build()` makes a fresh scorer from it (the proxy
    and `replay` do, once per run); printing the config shows the options, secrets masked."""

    name: str
    kind: str  # the table's `type`: a name in the registry
    factory: type[Scorer[Any]]
    options: ScorerOptions

    @property
    def threshold(self) -> float:
        return self.options.threshold

    def build(self) -> Scorer[Any]:
        return self.factory(self.name, self.options)

    def __repr__(self) -> str:
        # Not the options: they may hold an api_key.
        return f"ScorerSpec({self.name!r}, kind={self.kind!r})"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # Specs are made by the registry (see `resolve_tables`); pydantic only checks the type,
        # and dumps a spec as its options (SecretStr options stay masked).
        return core_schema.is_instance_schema(
            cls,
            serialization=core_schema.plain_serializer_function_ser_schema(
                _dump_options, info_arg=True
            ),
        )


def _dump_options(spec: ScorerSpec, info: SerializationInfo) -> Any:
    return spec.options.model_dump(mode=info.mode)


def resolve_tables(value: Any) -> Any:
    """The `[scorers]` tables as specs; the registry raises `ConfigError` naming the key."""
    if not isinstance(value, dict):
        raise ValueError("must be a table of [scorers.NAME] tables")
    if not value or all(isinstance(spec, ScorerSpec) for spec in value.values()):
        return value
    from shadowtap.scorers.registry import resolve_scorers

    return resolve_scorers(value)


ScorerSpecs = Annotated[dict[str, ScorerSpec], BeforeValidator(resolve_tables)]
