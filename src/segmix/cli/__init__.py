"""``segmix`` command line: one sub-command per pipeline step (:mod:`segmix.cli.app` holds the
app, its error handling and the shared options; each module below registers its commands)."""

from segmix.cli import data, pipeline, predict, stages  # noqa: F401  (registers the commands)
from segmix.cli.app import app, main

__all__ = ["app", "main"]
