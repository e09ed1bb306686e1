"""The command line: ``python -m gpucurate SUBCOMMAND`` (or the ``gpucurate``
script). ``main`` parses and dispatches (``main.py``); ``info``, ``demo`` and
``match`` are the subcommands that stand apart from the pipeline."""

from .main import build_parser, entry, main

__all__ = ["main", "entry", "build_parser"]
