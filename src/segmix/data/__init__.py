"""Datasets: the three WSSS histopathology benchmarks, the generic layout, the synthetic generator.

Each concept has its module, imported by its users: :mod:`~segmix.data.spec` (what a dataset
is), :mod:`~segmix.data.dataset` (its tiles), :mod:`~segmix.data.io` (reading and atomic
writing), :mod:`~segmix.data.synth` (the synthetic benchmark), :mod:`~segmix.data.stain`,
:mod:`~segmix.data.tissue` (glass).
"""
