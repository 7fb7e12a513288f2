"""Generate the JSON Schemas in ``core/schemas/`` from the message models of :mod:`finpulse.core.messages`.

``python -m finpulse.core.schemagen`` rewrites ``core/schemas/*.json``; ``python -m finpulse.core.schemagen --check``
rewrites nothing and exits 1, listing the files that differ from the models (a test runs the same check).

The documents are draft 2020-12, self-contained (nested objects under ``$defs``) and deterministic: keys in a
fixed order, two-space indent, a trailing newline. The output is kept close to a hand-written schema: no
generated titles or defaults for properties, ``"type": ["string", "null"]`` rather than ``anyOf`` where that
means the same, and descriptions (model docstrings included) on one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from .messages import SCHEMA_NAMES, model_for, schema_id

#: the dialect of every generated document
DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"

#: top-level keys in this order first (the rest keep pydantic's sorted order)
_HEAD_KEYS: Final = ("$schema", "$id", "title", "description", "type", "required", "properties", "additionalProperties")

#: the package's schema folder, ``core/schemas``
SCHEMA_DIR: Final = Path(__file__).resolve().parent / "schemas"

#: keywords that constrain values of every type: a schema holding one cannot be merged with ``{"type": "null"}``
_ANY_TYPE_KEYWORDS: Final = frozenset({"enum", "const", "$ref", "anyOf", "oneOf", "allOf", "not", "if", "then", "else"})


class _Generator(GenerateJsonSchema):
    """pydantic's generator, tuned for documents read by people and by other languages' validators."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        """Never add a generated title (``"Published At"``) to a property.

        :param schema: the field's core schema.
        """
        return False

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        """Leave defaults out: an omitted optional key means "absent", not a value to fill in.

        :param schema: the core schema of a field with a default.
        """
        return self.generate_inner(schema["schema"])

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        """``{"type": [T, "null"], ...}`` when the inner schema's keywords only apply to type ``T``, else ``anyOf``.

        :param schema: the core schema of ``T | None``.
        """
        inner = self.generate_inner(schema["schema"])
        kind = inner.get("type")
        if isinstance(kind, str) and kind != "null" and not _ANY_TYPE_KEYWORDS.intersection(inner):
            return {**inner, "type": [kind, "null"]}
        return super().nullable_schema(schema)

    def generate(self, schema: CoreSchema, mode: JsonSchemaMode = "validation") -> JsonSchemaValue:
        """The document, with every description on one line.

        :param schema: the model's core schema.
        :param mode: ``validation`` (what is accepted).
        """
        document: JsonSchemaValue = _one_line_descriptions(super().generate(schema, mode=mode))
        return document


def _one_line_descriptions(value: Any) -> Any:
    """``value`` with every ``description`` string's whitespace runs collapsed to one space.

    :param value: a JSON Schema or a part of it.
    """
    if isinstance(value, dict):
        return {
            key: (" ".join(item.split()) if key == "description" and isinstance(item, str)
                  else _one_line_descriptions(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_one_line_descriptions(item) for item in value]
    return value


def schema_document(name: str) -> dict[str, Any]:
    """The JSON Schema of message type ``name``, generated from its model.

    :param name: one of :data:`finpulse.core.messages.SCHEMA_NAMES`.
    """
    generated = model_for(name).model_json_schema(schema_generator=_Generator, mode="validation")
    document: dict[str, Any] = {"$schema": DRAFT, "$id": schema_id(name), **generated}
    head: dict[str, Any] = {key: document[key] for key in _HEAD_KEYS if key in document}
    return {**head, **{key: value for key, value in document.items() if key not in head}}


def schema_documents() -> dict[str, dict[str, Any]]:
    """Every message type's JSON Schema, by name (``news.raw``, ``news.scored``, ``news.dlq``, ``alert``)."""
    return {name: schema_document(name) for name in SCHEMA_NAMES}


def render(document: dict[str, Any]) -> str:
    """The file text of a schema document: two-space indent, UTF-8 characters as they are, a trailing newline.

    :param document: a JSON Schema.
    """
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def rendered_files() -> dict[str, str]:
    """The file name (``news.raw.json``, ...) and text of every schema document."""
    return {f"{name}.json": render(doc) for name, doc in schema_documents().items()}


def stale_files(directory: Path = SCHEMA_DIR) -> list[Path]:
    """The schema files in ``directory`` that are missing or differ from the models.

    :param directory: where the schema files are.
    """
    stale = []
    for file_name, text in rendered_files().items():
        path = directory / file_name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(path)
    return stale


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema document into ``directory`` (created if needed); unchanged files are not rewritten.

    :param directory: where the schema files go.
    :returns: the files written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in rendered_files().items():
        path = directory / file_name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: regenerate the schema files, or check them with ``--check``.

    :param argv: the arguments (default: ``sys.argv[1:]``).
    :returns: the exit status: 0, or 1 when ``--check`` found files that differ.
    """
    parser = argparse.ArgumentParser(prog="python -m finpulse.core.schemagen",
                                     description="Generate core/schemas/*.json from the message models.")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help=f"schema folder (default: {SCHEMA_DIR})")
    args = parser.parse_args(argv)
    directory: Path = args.dir
    if args.check:
        stale = stale_files(directory)
        for path in stale:
            print(f"{path}: differs from the models; run python -m finpulse.core.schemagen", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schemas(directory):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
