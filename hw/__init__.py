"""Bit-exact simulator of the FINN dataflow accelerator that ``bnnflow build`` generates.

It reads a build folder (FINN's builder layout), turns the HW-layer graph into
typed layer descriptions (:mod:`hw.graph`), takes weights and thresholds either
from the graph's initializers or from the files code generation wrote
(:mod:`hw.artifacts`), runs whole batches with integer semantics
(:mod:`hw.kernels`, :mod:`hw.tensors`, :mod:`hw.runners`, :mod:`hw.simulate`) and models cycles from the folding
(:mod:`hw.cycles`). :mod:`hw.verify` compares it with FINN's own execution and
with the Brevitas model; :mod:`hw.cli` is ``bnnflow sim``.
"""
