"""A snapshot spec, parsed once: `latest`, `latest~N`, an id prefix, or `random`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from drkit import errors

_LATEST = re.compile(r"latest(?:~(\d+))?")
_ID = re.compile(r"[0-9a-f]{4,64}")


@dataclass(frozen=True)
class Spec:
    """What a snapshot argument names: the N-th newest (`back`), an id prefix, or a random
    kept snapshot; `text` is the argument as given, for messages."""

    text: str
    back: int | None = None
    prefix: str | None = None
    random: bool = False

    @classmethod
    def parse(cls, text: str, *, allow_random: bool = False) -> Spec:
        """Return the spec text names; raise UsageError when it names nothing."""
        latest = _LATEST.fullmatch(text)
        if latest:
            return cls(text, back=int(latest.group(1) or 0))
        if _ID.fullmatch(text):
            return cls(text, prefix=text)
        if allow_random and text == "random":
            return cls(text, random=True)
        named = (
            "a snapshot id, 'latest', 'latest~N' or 'random'"
            if allow_random
            else ("a snapshot id, 'latest' or 'latest~N'")
        )
        raise errors.UsageError(f"{text!r} is not {named}")

    @classmethod
    def of(cls, value: str | Spec) -> Spec:
        """Return value parsed (a Spec is returned as it is)."""
        return value if isinstance(value, Spec) else cls.parse(value)

    @property
    def latest(self) -> bool:
        """True for `latest` itself: the spec whose answer a rollback would change."""
        return self.back == 0

    @property
    def relative(self) -> bool:
        """True for `latest` and `latest~N`: the answer depends on the listing."""
        return self.back is not None

    def __str__(self) -> str:
        return self.text
