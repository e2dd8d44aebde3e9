"""Which config fields are secret, read from a custom bot's JSON Schema.

A property is secret when its schema says ``"writeOnly": true`` (JSON Schema's own word for
"sent, never returned") or ``"format": "password"``. Properties are followed into nested
objects (``properties`` of ``properties``) and through local ``$ref`` (``#/$defs/...``);
a secret inside an array, or behind ``allOf``/``oneOf``, is not found: write it as a
plain property (docs/bots.md, "Secret config fields").
"""

from __future__ import annotations

from typing import Any

Path = tuple[str, ...]
# Deeper than any config may be (the input gate's Struct depth is 16): stops `$ref` loops too.
_MAX_DEPTH = 16


def _resolve(root: dict[str, Any], node: Any) -> Any:
    """A local ``$ref`` (``#/a/b``) followed once; anything else is returned as it is."""
    if not isinstance(node, dict) or not isinstance(ref := node.get("$ref"), str) or not ref.startswith("#/"):
        return node
    target: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            return node
        target = target[part]
    return target


def is_secret(node: Any) -> bool:
    return isinstance(node, dict) and (node.get("writeOnly") is True or node.get("format") == "password")


def secret_paths(schema: dict[str, Any] | None) -> frozenset[Path]:
    """The paths (``("exchange", "apiKey")``) of the schema's secret properties."""
    found: set[Path] = set()
    if not isinstance(schema, dict):
        return frozenset()
    stack: list[tuple[Any, Path]] = [(schema, ())]
    while stack:
        node, path = stack.pop()
        node = _resolve(schema, node)
        if not isinstance(node, dict) or len(path) >= _MAX_DEPTH:
            continue
        properties = node.get("properties")
        if not isinstance(properties, dict):
            continue
        for name, child in properties.items():
            child = _resolve(schema, child)
            if is_secret(child):
                found.add((*path, name))
            else:
                stack.append((child, (*path, name)))
    return frozenset(found)


def under_secret(path: Path | list[Any], secrets: frozenset[Path]) -> bool:
    """True when ``path`` is a secret, inside one, or holds one (an error there would quote its value)."""
    as_tuple = tuple(str(p) for p in path)
    return any(
        as_tuple[: len(secret)] == secret or secret[: len(as_tuple)] == as_tuple for secret in secrets
    )


def get_at(config: dict[str, Any], path: Path) -> tuple[bool, Any]:
    node: Any = config
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def set_at(config: dict[str, Any], path: Path, value: Any) -> None:
    """Set ``value`` at ``path``, making the objects on the way (a parent that is not an object is left)."""
    node: Any = config
    for part in path[:-1]:
        if part not in node:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            return
    node[path[-1]] = value
