"""``python -m segmix.cli``: the ``segmix`` command."""

from segmix.cli import main

main()
