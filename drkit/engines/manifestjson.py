"""The manifest's JSON, a piece at a time: its file entries encoded and parsed PIECE at a time,
so that the entries never exist as dicts all at once beside the model (at 100,000 files they
were twice its size)."""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator

from pydantic import TypeAdapter

from drkit.model import FileRecord, Manifest, share_field_sets

PIECE = 1000  # file entries parsed, validated or encoded at a time


def json_pieces(
    manifest: Manifest,
    *,
    separators: tuple[str, str],
    exclude: Iterable[str] = (),
    entry: Callable[[dict[str, object]], dict[str, object]] | None = None,
) -> Iterator[str]:
    """Yield json.dumps(the manifest's given fields but exclude, sort_keys=True, separators)
    in pieces, the file entries (each passed through entry, if given) PIECE at a time: the same
    text, without the whole document as dicts in memory beside the model."""
    document = manifest.model_dump(exclude_unset=True, exclude={"files", *exclude})
    if "files" not in manifest.model_fields_set:
        yield json.dumps(document, sort_keys=True, separators=separators)
        return
    marker = json.dumps(os.urandom(16).hex())  # a string no other value of the document holds
    document["files"] = [json.loads(marker)]
    head, tail = json.dumps(document, sort_keys=True, separators=separators).split(marker)
    yield head
    for start in range(0, len(manifest.files), PIECE):
        dumped = _entries().dump_python(manifest.files[start : start + PIECE], exclude_unset=True)
        text = json.dumps([entry(d) for d in dumped] if entry else dumped, sort_keys=True,
                          separators=separators)[1:-1]  # fmt: skip
        yield (separators[0] + text) if start else text
    yield tail


@functools.cache
def _entries() -> TypeAdapter[list[FileRecord]]:
    return TypeAdapter(list[FileRecord])


_SPACE = re.compile(r"[ \t\n\r]*")


def streamed(text: str) -> dict[str, object]:
    """Return the manifest's JSON object with its files already FileRecords, validated PIECE
    entries at a time as they are parsed: the entries as dicts never all exist at once (at
    100,000 files they were twice the model). Raise ValueError on anything unexpected."""
    decoder, document = json.JSONDecoder(), dict[str, object]()
    index = _skip(text, 0, "{")
    while not text.startswith("}", index):
        key, index = decoder.raw_decode(text, index)
        if not isinstance(key, str):
            raise ValueError("a key that is not a string")
        index = _skip(text, index, ":")
        if key == "files":
            document[key], index = _streamed_files(decoder, text, index)
        else:
            document[key], index = decoder.raw_decode(text, index)
        index = _after_item(text, index, "}")
    if text[_skip(text, index, "}") :].strip(" \t\n\r"):
        raise ValueError("data after the manifest")
    return document


def _streamed_files(
    decoder: json.JSONDecoder, text: str, index: int
) -> tuple[list[FileRecord], int]:
    files: list[FileRecord] = []
    index, piece = _skip(text, index, "["), list[object]()
    while True:
        if text.startswith("]", index) or len(piece) == PIECE:
            validated = _entries().validate_python(piece)
            share_field_sets(validated)  # lean before the next piece
            files += validated
            piece.clear()
        if text.startswith("]", index):
            return files, _skip(text, index, "]")
        entry, index = decoder.raw_decode(text, index)
        piece.append(entry)
        index = _after_item(text, index, "]")


def _after_item(text: str, index: int, closing: str) -> int:
    """Return the index of the next item after a comma, or of closing; ValueError else."""
    index = _space(text, index)
    if text.startswith(closing, index):
        return index
    index = _skip(text, index, ",")
    if text.startswith(closing, index):
        raise ValueError(f"{closing} after a comma")
    return index


def _space(text: str, index: int) -> int:
    found = _SPACE.match(text, index)
    return found.end() if found else index


def _skip(text: str, index: int, expected: str) -> int:
    """Return the index after white space, expected and white space; ValueError without it."""
    index = _space(text, index)
    if not text.startswith(expected, index):
        raise ValueError(f"{expected} expected at {index}")
    return _space(text, index + 1)
