"""FINN/qonnx work-arounds as qonnx Transformations, one pass (or pass family) per file, each
unit-tested on a hand-made graph (``tests/test_transforms.py``; the threshold clamp and the
weight re-typing in ``tests/test_conformance.py``).

Nothing here imports bnnflow: a pass either rewrites exactly or leaves the
graph alone, so each could be upstreamed to FINN as it is. A graph the passes
refuse raises :class:`~build_flows.transforms.errors.UnsupportedGraph` (the
build step turns it into bnnflow's ``NotSupported``); a pass that needs
another to have run first checks it on the graph it receives
(:mod:`build_flows.transforms.order`).

* :mod:`~build_flows.transforms.bipolar_padding`: -1 padding through streamlining
* :mod:`~build_flows.transforms.global_pool`: global average pooling FINN builds
* :mod:`~build_flows.transforms.residual`: residual sums as an integer popcount sum
* :mod:`~build_flows.transforms.clamp_thresholds`: thresholds clamped into the compared range
* :mod:`~build_flows.transforms.non_binary_weights`: no BINARY weights on non-XNOR MVAUs
* :mod:`~build_flows.transforms.widen_xnor_accumulators`: XNOR accumulators that hold the popcount
* :mod:`~build_flows.transforms.hls_mvau_simd`: HLS MVAU SIMD finn-hlslib can build
"""
