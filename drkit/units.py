"""drkit's one vocabulary for numbers people read: sizes in IEC units, durations in one format.

Text output, the HTML and Markdown reports, alert texts and help all format through here, so
`15 min` never appears elsewhere as `15.0m` or `900 s`.
"""

from __future__ import annotations

_IEC = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_STEPS = ((86400, "d", 3600, "h"), (3600, "h", 60, "min"), (60, "min", 1, "s"))

# What drkit adds to every snapshot beside the node's files; counted in every file count.
OWN_FILES = ("manifest.json", "manifest.sig", "drkit.yaml")


def size(count: float | None) -> str:
    """Given a byte count, return it in IEC units: '512 B', '17.8 KiB', '2.0 GiB'; '' for None."""
    if count is None:
        return ""
    value, index = float(count), 0
    while abs(value) >= 1024 and index < len(_IEC) - 1:
        value, index = value / 1024, index + 1
    return f"{value:.0f} B" if index == 0 else f"{value:.1f} {_IEC[index]}"


def duration(seconds: float | None, none: str = "none") -> str:
    """Given seconds, return them as people read them: '4.2 s' (under 10 s), '45 s',
    '4 min 18 s', '15 min', '3 h 20 min', '2 d 5 h'; `none` for None.

    Two units at most, the second left out when it is 0; a negative duration (a clock ahead)
    keeps its sign.
    """
    if seconds is None:
        return none
    sign, seconds = ("-" if seconds < 0 else ""), abs(float(seconds))
    if seconds < 10 and round(seconds, 1) < 10:
        return f"{sign}{seconds:.1f} s"
    whole = round(seconds)
    for unit_seconds, unit, part_seconds, part in _STEPS:
        if whole >= unit_seconds:
            high, rest = divmod(whole, unit_seconds)
            low = rest // part_seconds
            return f"{sign}{high} {unit}" + (f" {low} {part}" if low else "")
    return f"{sign}{whole} s"
