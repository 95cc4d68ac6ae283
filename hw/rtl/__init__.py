"""RTL co-simulation: FINN's generated HDL of each RTL node, run with Verilator, against the simulator.

:mod:`hw.rtl.compile` builds a node's HDL into ``harness.cpp`` (an AXI-stream
source and sink with seeded gaps and back-pressure) and caches the
executable; :mod:`hw.rtl.streams` packs tensors into stream words as FINN
does; :mod:`hw.rtl.cosim` drives every RTL node of a build with its real
input tensor and compares its output with the simulator's (``bnnflow sim DIR --rtl``).
"""
