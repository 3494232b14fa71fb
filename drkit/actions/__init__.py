"""Actions: one module per command, each returning a result for the CLI to render."""
