"""Decode Stripe's form encoding (``a[b][0][c]=v``) into nested dicts and lists."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_NAME = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


class FormError(ValueError):
    """A request body or query string that cannot be decoded."""


def split_name(name: str) -> list[str]:
    """``"line_items[0][quantity]"`` -> ``["line_items", "0", "quantity"]``."""
    match = _NAME.match(name)
    if match is None:
        raise FormError(f"Invalid parameter name: {name}")
    return [match.group(1), *_PART.findall(match.group(2))]


def join_name(parts: list[str]) -> str:
    """Inverse of :func:`split_name`."""
    return parts[0] + "".join(f"[{part}]" for part in parts[1:])


def parse_form(body: bytes | str) -> dict[str, Any]:
    """Turn an urlencoded body into nested dicts; runs of integer indices become lists."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    root: dict[str, Any] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        _assign(root, split_name(name), value)
    return {key: _listify(key, value) for key, value in root.items()}


def _assign(root: dict[str, Any], parts: list[str], value: str) -> None:
    node = root
    for depth, part in enumerate(parts):
        if part == "":
            part = str(len(node))  # `expand[]=a&expand[]=b` appends
        if depth == len(parts) - 1:
            if isinstance(node.get(part), dict):
                raise FormError(f"Invalid parameter: {join_name(parts)} is both a hash and a value")
            node[part] = value
            return
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise FormError(f"Invalid parameter: {join_name(parts)} is both a hash and a value")
        node = child


def _listify(name: str, value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    # Metadata keys are free-form strings, so `metadata[0]=x` must stay a hash.
    if name != "metadata" and value and all(key.isdigit() for key in value):
        return [_listify(key, value[key]) for key in sorted(value, key=int)]
    return {key: _listify(key, child) for key, child in value.items()}
