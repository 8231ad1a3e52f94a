"""Errors raised for bad dataset input; each names the offending file (see :mod:`segmix.errors`)."""

from __future__ import annotations

from segmix.errors import DatasetError

__all__ = ["DatasetError"]
