"""drkit's command line: parse, load config, call one action, render its result, exit.

One Typer app (drkit.cli.base) whose commands live in modules by command group; importing
them registers them. Exit codes are documented in drkit.errors.EXIT_CODES, the help's epilog.
"""

from drkit.cli.base import app

# isort: off
# (registration order is the order of the help's command list)
from drkit.cli import backup, operation, fleet
# isort: on

__all__ = ["app", "backup", "fleet", "main", "operation"]


def main() -> None:
    """Entry point of the drkit command."""
    app()
