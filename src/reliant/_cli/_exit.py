"""The ``reliant`` command's exit codes, in a room of their own so every command module
can use them without importing the command line's entry point (no import circle)."""

from __future__ import annotations

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED"]

EXIT_FAILED = 1
"""The request failed (every provider and model), or the benchmark could not run."""

EXIT_BAD_INPUT = 2
"""Bad arguments or a bad configuration file: nothing was sent."""

EXIT_INTERRUPTED = 130
"""Interrupted (Ctrl-C), after closing the upstream."""
