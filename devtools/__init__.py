"""Development fixtures for the demo, tests and bench: sample nodes and the demo report.

Not part of drkit: the wheel and the Docker image carry only the `drkit` package.
"""
