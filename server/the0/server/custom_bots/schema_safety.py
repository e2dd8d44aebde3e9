"""Uploaded JSON Schemas are untrusted data: bounded, self-contained, and run on a linear-time regex engine.

A custom bot's schema is written by its uploader and evaluated on every CreateBot, UpdateBot and
CreateBacktest of its version. jsonschema's defaults are built for trusted schemas: its default registry
reads ``file://`` and fetches ``http(s)://`` references (no timeout), and ``pattern`` /
``patternProperties`` / ``format: regex`` go to Python's backtracking ``re``, which holds the GIL: a
22-character value against ``^(a+)+$`` froze a replica for 0.83 s, 40 characters froze it for good.

So this module

- lists what an upload must not contain (``problems``): references that are not local (``#...``), ``$id``s
  (they would move the base URI off this document), unknown dialects, documents over the size limits,
  patterns that RE2 cannot compile (back-references, look-around) and ``unevaluatedProperties`` next to
  ``patternProperties`` (jsonschema evaluates those with ``re`` internally);
- compiles a validator (``compile_schema``) whose registry retrieves nothing, whose regex keywords and
  ``format: regex`` use RE2 (linear in the input; it releases the GIL while matching), whose
  ``uniqueItems`` is O(n log n), and whose every keyword checks a per-thread deadline so an expensive
  schema stops when its time is up (``errors_within``). Stored schemas are checked again here, so one
  saved before these rules cannot read a file or the network either.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import re2  # type: ignore[import-untyped]  # google-re2 ships no type information
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema import (
    Draft4Validator,
    Draft6Validator,
    Draft7Validator,
    Draft201909Validator,
    Draft202012Validator,
    FormatChecker,
    ValidationError,
)
from jsonschema._utils import uniq
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import extend

# Limits of one schema document (docs/limits.md, "Uploaded schemas").
MAX_DEPTH = 32  # nesting of JSON objects/arrays
MAX_OBJECTS = 5_000  # JSON objects, i.e. an upper bound of the subschemas (~1.2 s of meta-schema check)
MAX_VALUES = 50_000  # JSON values of every kind
MAX_ENUM_ITEMS = 1_000
MAX_PATTERNS = 200  # `pattern` values and `patternProperties` keys together
MAX_PATTERN_CHARS = 1_000
# RE2's memory budget per compiled pattern (its default is 8 MiB); 4 MiB still fits
# `^[\p{L}\p{N} _.-]{1,200}$`, and the DFA cache only grows as far as a search needs.
RE2_MAX_MEM = 4 * 1024 * 1024
MAX_PROBLEMS = 20  # reported per schema; the rest is summarised

_DIALECTS: dict[str, type[Validator]] = {
    "https://json-schema.org/draft/2020-12/schema": Draft202012Validator,
    "https://json-schema.org/draft/2019-09/schema": Draft201909Validator,
    "http://json-schema.org/draft-07/schema": Draft7Validator,
    "http://json-schema.org/draft-06/schema": Draft6Validator,
    "http://json-schema.org/draft-04/schema": Draft4Validator,
}
_REFERENCES = ("$ref", "$dynamicRef", "$recursiveRef")
_LOOKAROUND = ("(?=", "(?!", "(?<=", "(?<!")


def _retrieve_nothing(uri: str) -> referencing.Resource[Any]:
    """The registry's retrieve hook: uploaded schemas never reach a file or the network."""
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs class


# A registry with nothing in it that can retrieve nothing: only the schema itself resolves.
NO_RETRIEVAL: referencing.Registry[Any] = referencing.Registry(  # type: ignore[call-arg]  # attrs class
    retrieve=_retrieve_nothing
)


@dataclass(frozen=True, slots=True)
class SchemaProblem:
    """One reason a schema is refused; ``pointer`` is the JSON Pointer of the offending value."""

    pointer: str
    message: str

    def describe(self) -> str:
        return f"at {self.pointer or '/'}: {self.message}"


class UnsafeSchema(Exception):
    """A schema (stored or uploaded) breaks the rules above."""

    def __init__(self, problems: list[SchemaProblem]) -> None:
        super().__init__("; ".join(p.describe() for p in problems))
        self.problems = problems


class ValidationTimedOut(Exception):
    """The validating thread's deadline passed: the schema is too expensive for this config."""


def _options() -> Any:
    options = re2.Options()
    options.max_mem = RE2_MAX_MEM
    options.log_errors = False  # RE2 would write every refused pattern to stderr
    return options


_RE2_OPTIONS = _options()


def compile_regex(pattern: str) -> Any:
    """An RE2 regex; raises ``re2.error`` with a message saying why RE2 refuses it."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise re2.error(f"is longer than {MAX_PATTERN_CHARS} characters")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as error:
        raise re2.error(_explain(pattern, error)) from error


def _explain(pattern: str, error: Exception) -> str:
    detail = error.args[0] if error.args else ""
    text = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
    if any(token in pattern for token in _LOOKAROUND):
        hint = "look-ahead and look-behind are not supported"
    elif text.startswith("invalid escape sequence: \\") and text[-1:].isdigit():
        hint = "back-references (\\1) are not supported"
    elif "\\Z" in text:
        hint = "write \\z for the end of the text"
    elif "\\u" in text:
        hint = "write \\x{263A} instead of \\u263A"
    elif "too large" in text:
        hint = f"it needs more than {RE2_MAX_MEM // (1024 * 1024)} MiB to compile"
    else:
        hint = ""
    return f"is not a pattern the linear-time engine (RE2) accepts: {text}" + (f"; {hint}" if hint else "")


def dialect_of(schema: dict[str, Any]) -> type[Validator]:
    """The validator class of ``$schema`` (2020-12 without one); call only after ``problems`` is empty."""
    declared = schema.get("$schema")
    if isinstance(declared, str):
        return _DIALECTS[declared.rstrip("#")]
    return Draft202012Validator


def _pointer(parts: Iterable[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def problems(schema: object) -> list[SchemaProblem]:
    """Every rule ``schema`` breaks (at most ``MAX_PROBLEMS``); empty when it is safe to compile."""
    if not isinstance(schema, dict):
        return [SchemaProblem("", "must be a JSON Schema object")]
    found = _document_problems(schema)
    if not found:
        found = _reference_problems(schema)
    if len(found) > MAX_PROBLEMS:
        found = [*found[: MAX_PROBLEMS - 1], SchemaProblem("", f"and {len(found) - MAX_PROBLEMS + 1} more")]
    return found


def _document_problems(schema: dict[str, Any]) -> list[SchemaProblem]:
    """One iterative pass over the raw document (no recursion: depth is what we are bounding)."""
    found: list[SchemaProblem] = []
    values = objects = patterns = 0
    pattern_properties_at: str | None = None
    unevaluated_at: str | None = None
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(schema, ())]
    while stack:
        value, path = stack.pop()
        values += 1
        if values > MAX_VALUES:
            return [SchemaProblem("", f"has more than {MAX_VALUES} JSON values")]
        if len(path) > MAX_DEPTH:
            return [SchemaProblem(_pointer(path), f"is nested more than {MAX_DEPTH} levels deep")]
        if isinstance(value, list):
            stack.extend((item, (*path, index)) for index, item in enumerate(value))
            continue
        if not isinstance(value, dict):
            continue
        objects += 1
        if objects > MAX_OBJECTS:
            return [SchemaProblem("", f"has more than {MAX_OBJECTS} objects (subschemas)")]
        # Keywords are looked for in every object, data (enum, default) included: a false alarm
        # there is harmless, a keyword missed under an unknown keyword that a `$ref` points into is not.
        for key in _REFERENCES:
            target = value.get(key)
            if isinstance(target, str) and not target.startswith("#"):
                found.append(
                    SchemaProblem(
                        _pointer((*path, key)),
                        "must point inside this schema (\"#/$defs/...\"): "
                        "schemas cannot load other files or URLs",
                    )
                )
        declared_id = value.get("$id")
        if isinstance(declared_id, str) and not declared_id.startswith("#"):
            found.append(
                SchemaProblem(_pointer((*path, "$id")), "is not allowed: an uploaded schema is one document")
            )
        dialect = value.get("$schema")
        if isinstance(dialect, str) and dialect.rstrip("#") not in _DIALECTS:
            found.append(
                SchemaProblem(
                    _pointer((*path, "$schema")),
                    "must be one of the JSON Schema drafts 4, 6, 7, 2019-09 or 2020-12",
                )
            )
        enum = value.get("enum")
        if isinstance(enum, list) and len(enum) > MAX_ENUM_ITEMS:
            found.append(SchemaProblem(_pointer((*path, "enum")), f"has more than {MAX_ENUM_ITEMS} items"))
        regexes: list[tuple[str, tuple[str | int, ...]]] = []
        pattern = value.get("pattern")
        if isinstance(pattern, str):
            regexes.append((pattern, (*path, "pattern")))
        pattern_properties = value.get("patternProperties")
        if isinstance(pattern_properties, dict):
            pattern_properties_at = pattern_properties_at or _pointer((*path, "patternProperties"))
            regexes.extend((key, (*path, "patternProperties", key)) for key in pattern_properties)
        if "unevaluatedProperties" in value:
            unevaluated_at = unevaluated_at or _pointer((*path, "unevaluatedProperties"))
        for regex, where in regexes:
            patterns += 1
            if patterns > MAX_PATTERNS:
                return [SchemaProblem("", f"has more than {MAX_PATTERNS} patterns")]
            try:
                compile_regex(regex)
            except re2.error as error:
                found.append(SchemaProblem(_pointer(where), str(error.args[0])))
        stack.extend((item, (*path, key)) for key, item in reversed(value.items()))
    if pattern_properties_at is not None and unevaluated_at is not None:
        found.append(
            SchemaProblem(
                unevaluated_at,
                f"cannot be combined with patternProperties ({pattern_properties_at}): "
                "use additionalProperties instead",
            )
        )
    return found


def _reference_problems(schema: dict[str, Any]) -> list[SchemaProblem]:
    """Every embedded resource has no id, and every local reference points at something in the document."""
    resource = referencing.jsonschema.specification_with(
        _dialect_uri(dialect_of(schema)), default=referencing.jsonschema.DRAFT202012
    ).create_resource(schema)
    found: list[SchemaProblem] = []
    pending = list(resource.subresources())
    while pending:
        sub = pending.pop()
        if sub.id() is not None:
            found.append(SchemaProblem("", "embedded schemas must not declare an id"))
            break
        pending.extend(sub.subresources())
    if found:
        return found
    resolver = NO_RETRIEVAL.resolver_with_root(resource)
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(schema, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, list):
            stack.extend((item, (*path, index)) for index, item in enumerate(value))
        elif isinstance(value, dict):
            for key in ("$ref", "$dynamicRef"):
                target = value.get(key)
                if isinstance(target, str):
                    try:
                        resolver.lookup(target)
                    except referencing.exceptions.Unresolvable:
                        found.append(
                            SchemaProblem(_pointer((*path, key)), "points at nothing in this schema")
                        )
            stack.extend((item, (*path, key)) for key, item in value.items())
    return found


def _dialect_uri(cls: type[Validator]) -> str:
    return str(cls.META_SCHEMA.get("$schema", "")) or str(cls.META_SCHEMA.get("id", ""))


def _is_regex(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    compile_regex(instance)
    return True


def _format_checker(cls: type[Validator]) -> FormatChecker:
    """The dialect's format checks, with ``regex`` compiled by RE2 instead of ``re``."""
    checker = FormatChecker(formats=())
    checker.checkers = dict(cls.FORMAT_CHECKER.checkers)
    checker.checks("regex", raises=re2.error)(_is_regex)
    return checker


def check_schema(schema: dict[str, Any]) -> None:
    """The dialect's meta-schema check; patterns in the schema are compiled by RE2, never ``re``."""
    cls = dialect_of(schema)
    cls.check_schema(schema, format_checker=_format_checker(cls))  # type: ignore[call-arg]  # not in the protocol


# -- the compiled validator --------------------------------------------------------------------------

_deadline = threading.local()


_YIELD_EVERY = 64  # keyword calls between two offers of the GIL to the event loop


def _check_deadline() -> None:
    if time.monotonic() > getattr(_deadline, "at", math.inf):
        raise ValidationTimedOut
    # A pure-Python worker keeps the GIL for a whole switch interval (5 ms) whenever the event loop
    # asks for it; sleeping 0 hands it over now, so a long validation costs the loop microseconds.
    _deadline.calls = calls = getattr(_deadline, "calls", 0) + 1
    if calls % _YIELD_EVERY == 0:
        time.sleep(0)


Keyword = Callable[[Any, Any, Any, dict[str, Any]], Iterator[ValidationError] | None]


def _bounded(keyword: Keyword) -> Keyword:
    @functools.wraps(keyword)
    def run(validator: Any, value: Any, instance: Any, schema: dict[str, Any]) -> Any:
        _check_deadline()
        return keyword(validator, value, instance, schema)

    return run


@dataclass(frozen=True, slots=True)
class CompiledSchema:
    """A validator for one stored schema, and the RE2 regexes of its patterns."""

    validator: Validator
    regexes: dict[str, Any]

    def matches_any(self, patterns: Iterable[str], text: str) -> bool:
        return any(self._regex(p).search(text) is not None for p in patterns)

    def _regex(self, pattern: str) -> Any:
        regex = self.regexes.get(pattern)
        # Every pattern of the document was compiled up front; this is for one we did not foresee.
        return regex if regex is not None else compile_regex(pattern)

    def errors_within(self, instance: Any, deadline: float) -> list[ValidationError]:
        """All errors of ``instance``; raises ``ValidationTimedOut`` once ``time.monotonic()`` passes deadline."""
        _deadline.at = deadline
        try:
            return list(self.validator.iter_errors(instance))
        finally:
            _deadline.at = math.inf


def compile_schema(schema: dict[str, Any]) -> CompiledSchema:
    """A safe validator for ``schema``; raises ``UnsafeSchema`` or ``SchemaError``."""
    found = problems(schema)
    if found:
        raise UnsafeSchema(found)
    check_schema(schema)
    regexes = _regexes_of(schema)
    base = dialect_of(schema)
    compiled: CompiledSchema

    def search(pattern: str, text: str) -> bool:
        return compiled.matches_any((pattern,), text)

    def pattern(validator: Any, patrn: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
        if validator.is_type(instance, "string") and not search(patrn, instance):
            yield ValidationError(f"does not match {patrn!r}")

    def pattern_properties(
        validator: Any, value: Any, instance: Any, schema: dict[str, Any]
    ) -> Iterator[ValidationError]:
        if not validator.is_type(instance, "object"):
            return
        for regex, subschema in value.items():
            for key, item in instance.items():
                if search(regex, key):
                    yield from validator.descend(item, subschema, path=key, schema_path=regex)

    def additional_properties(
        validator: Any, value: Any, instance: Any, schema: dict[str, Any]
    ) -> Iterator[ValidationError]:
        if not validator.is_type(instance, "object"):
            return
        known = schema.get("properties", {})
        regexes = list(schema.get("patternProperties", {}))
        extras = [k for k in instance if k not in known and not compiled.matches_any(regexes, k)]
        if validator.is_type(value, "object"):
            for extra in extras:
                yield from validator.descend(instance[extra], value, path=extra)
        elif value is False and extras:
            names = ", ".join(repr(e) for e in sorted(extras)[:10])
            yield ValidationError(f"Additional properties are not allowed ({names})")

    validators: dict[str, Keyword] = {
        keyword: _bounded(function) for keyword, function in base.VALIDATORS.items()
    }
    validators.update(
        {
            "pattern": _bounded(pattern),
            "patternProperties": _bounded(pattern_properties),
            "additionalProperties": _bounded(additional_properties),
            "uniqueItems": _bounded(_unique_items),
            "anyOf": _bounded(_any_of),
            "oneOf": _bounded(_one_of),
        }
    )
    checker = _format_checker(base)
    cls = extend(base, validators=validators, format_checker=checker)  # type: ignore[no-untyped-call]
    # The format checker is passed explicitly: without one, 2019-09+ treat `format` as an annotation only.
    compiled = CompiledSchema(
        validator=cls(schema, registry=NO_RETRIEVAL, format_checker=checker), regexes=regexes
    )
    return compiled


def _regexes_of(schema: dict[str, Any]) -> dict[str, Any]:
    regexes: dict[str, Any] = {}
    stack: list[Any] = [schema]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            if isinstance(value.get("pattern"), str):
                regexes.setdefault(value["pattern"], None)
            if isinstance(value.get("patternProperties"), dict):
                regexes.update(dict.fromkeys(value["patternProperties"]))
            stack.extend(value.values())
    return {pattern: compile_regex(pattern) for pattern in regexes}


def _passes(validator: Any, instance: Any, subschema: Any, index: int) -> bool:
    return next(iter(validator.descend(instance, subschema, schema_path=index)), None) is None


def _any_of(validator: Any, any_of: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    """jsonschema keeps every failed branch's errors as context: nested anyOf keep a tree of 2**depth
    errors, and the garbage collector's passes over it held the event loop for up to 0.8 s. We stop at
    the first error of each branch and keep none (the config's violations never show the context)."""
    if not any(_passes(validator, instance, subschema, index) for index, subschema in enumerate(any_of)):
        yield ValidationError("is not valid under any of the allowed schemas (anyOf)")


def _one_of(validator: Any, one_of: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    """As ``_any_of``; the message names how many branches matched, never the schemas (they can be large)."""
    matched = 0
    for index, subschema in enumerate(one_of):
        if _passes(validator, instance, subschema, index):
            matched += 1
            if matched > 1:
                break
    if matched == 0:
        yield ValidationError("is not valid under any of the allowed schemas (oneOf)")
    elif matched > 1:
        yield ValidationError("is valid under more than one of the allowed schemas (oneOf)")


def _unique_items(
    validator: Any, unique: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """jsonschema compares unhashable items pairwise (O(n²)); canonical JSON makes it a set lookup.

    Configs are normalised first (integral floats become ints), so equal JSON values serialise alike;
    ``true`` and ``1`` stay different, as JSON Schema requires.
    """
    if not unique or not validator.is_type(instance, "array"):
        return
    try:
        seen = {hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).digest() for item in instance}
    except (TypeError, orjson.JSONEncodeError):
        if not uniq(instance):
            yield ValidationError("has non-unique elements")
        return
    if len(seen) != len(instance):
        yield ValidationError("has non-unique elements")


def _short(value: str) -> str:
    return repr(value) if len(value) <= 40 else repr(value[:40]) + "…"


__all__ = [
    "CompiledSchema",
    "SchemaError",
    "SchemaProblem",
    "UnsafeSchema",
    "ValidationTimedOut",
    "check_schema",
    "compile_schema",
    "problems",
]
