"""The command line, its options made from the settings dataclasses."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
