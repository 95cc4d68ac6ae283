"""FINN/qonnx work-arounds as qonnx Transformations, one per file, each unit-tested on a hand-made graph.

Nothing here imports bnnflow: a pass either rewrites exactly or leaves the
graph alone, so each could be upstreamed to FINN as it is.
"""
