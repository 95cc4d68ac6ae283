"""Read the post-synthesis reports that FINN's builder leaves where Vivado ran.

Files in ``DIR/report/`` (finn-plus 1.6.1, ``build_dataflow_steps.py``):

* ``post_synth_resources.json``: per node (and ``(top)``, the whole design with
  the Zynq shell), FINN's own parse of Vivado's hierarchical utilization
  (``step_synthesize_bitfile``); ``post_synth_resources_dcp.json`` is the
  same for the stitched IP's synthesis (``stitched_ip_gen_dcp``).
* ``post_synth_report.xml`` / ``post_synth_resources_dcp.xml``: the Vivado
  ``report_utilization -hierarchical -format xml`` output those JSON files
  were made from. When only the XML is there it is parsed with FINN's own
  ``post_synth_res`` against the build's accelerator graph.
* ``post_route_timing.rpt``: Vivado's ``report_timing_summary`` of the routed
  design; its worst negative slack is read with FINN's own parser.
* ``ooc_synth_and_timing.json``: totals, WNS and fmax of the out-of-context
  place and route of the stitched IP (``step_out_of_context_synthesis``).

Nothing here runs Vivado; a build without these files simply has no
synthesis columns.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError
from bnnflow.files import read_json
from build_flows.build_dir import BuildDir

# (JSON written by FINN, the XML it was parsed from), best first.
RESOURCE_FILES = (
    ("post_synth_resources.json", "post_synth_report.xml"),
    ("post_synth_resources_dcp.json", "post_synth_resources_dcp.xml"),
)
TIMING_FILE = "post_route_timing.rpt"
OOC_FILE = "ooc_synth_and_timing.json"
TOP = "(top)"
_FIX = "re-run synthesis or delete the file"


@dataclass(frozen=True)
class Synth:
    """Post-synthesis figures of one build, as FINN's and Vivado's report files give them."""

    sources: list[Path]
    layers: dict[str, dict[str, float]] = field(default_factory=dict)  # node -> LUT/FF/SRL/BRAM_36K/BRAM_18K/DSP
    top: dict[str, float] | None = None  # whole design incl. shell (Vivado's "(top)" row)
    shell: dict[str, dict[str, float]] = field(default_factory=dict)  # shell parts FINN lists (interconnects)
    ooc: dict[str, Any] | None = None  # ooc_synth_and_timing.json as written
    wns_ns: float | None = None  # worst negative slack, routed design
    fmax_mhz: float | None = None


def _numbers(obj: Any, path: Path) -> dict[str, dict[str, float]]:
    if not isinstance(obj, dict):
        raise BnnflowError(f"{path}: malformed post-synthesis report, expected node -> resources; {_FIX}")
    for name, res in obj.items():
        if not isinstance(res, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in res.values()
        ):
            raise BnnflowError(
                f"{path}: malformed post-synthesis report, entry {name!r} is not resource -> number; {_FIX}"
            )
    return obj


def _load_json(path: Path) -> Any:
    return read_json(path, "malformed post-synthesis report, not valid JSON", _FIX)


def parse_utilization_xml(xml_path: Path, accel_path: Path) -> dict[str, dict[str, float]]:
    """Per-node resources from Vivado's hierarchical XML, with FINN's ``post_synth_res``."""
    from finn.analysis.fpgadataflow.post_synth_res import post_synth_res
    from qonnx.core.modelwrapper import ModelWrapper

    try:
        ET.parse(xml_path)  # FINN's parser fails with a bare IndexError/ParseError: check the file first
    except (OSError, ET.ParseError) as exc:
        raise BnnflowError(f"{xml_path}: malformed Vivado utilization report, not valid XML ({exc}); {_FIX}") from exc
    model = ModelWrapper(str(accel_path))
    try:
        res = post_synth_res(model, override_synth_report_filename=xml_path)[0]
    except (IndexError, ValueError, KeyError) as exc:
        raise BnnflowError(
            f"{xml_path}: malformed Vivado utilization report, a row lacks a resource column or holds a "
            f"non-number ({type(exc).__name__}: {exc}); expected `report_utilization -hierarchical -format xml` "
            f"output; {_FIX}"
        ) from exc
    if not res:
        raise BnnflowError(
            f"{xml_path}: no '(top)' row and no accelerator node found; expected Vivado's "
            f"`report_utilization -hierarchical -format xml` of this build; {_FIX}"
        )
    return res


def read_wns(path: Path) -> float:
    """Worst negative slack (ns) of a Vivado timing summary, with FINN's own parser."""
    from finn.util.vivado import _parse_vivado_timing_report

    try:
        wns = _parse_vivado_timing_report(path).get("WNS")
    except (OSError, UnicodeDecodeError) as exc:
        raise BnnflowError(f"{path}: cannot read the timing report ({exc}); {_FIX}") from exc
    if wns is None:
        raise BnnflowError(
            f"{path}: malformed timing report, no 'WNS(ns)' design summary found; expected "
            f"Vivado's `report_timing_summary` output; {_FIX}"
        )
    return wns


def read_synth(build: BuildDir) -> Synth | None:
    """The post-synthesis figures in the build's ``report/``, or None when no synthesis ran."""
    rdir, accel_path, clock_ns = build.report_dir, build.accel, build.clock_ns
    sources: list[Path] = []
    per_node: dict[str, dict[str, float]] | None = None
    for json_name, xml_name in RESOURCE_FILES:
        jpath, xpath = rdir / json_name, rdir / xml_name
        if jpath.is_file():
            per_node = _numbers(_load_json(jpath), jpath)
            sources.append(jpath)
        elif xpath.is_file():
            per_node = parse_utilization_xml(xpath, accel_path)
            sources.append(xpath)
        if per_node is not None:
            break
    ooc = None
    opath = rdir / OOC_FILE
    if opath.is_file():
        ooc = _load_json(opath)
        if not isinstance(ooc, dict) or not isinstance(ooc.get("LUT"), (int, float)):
            raise BnnflowError(f"{opath}: malformed out-of-context synthesis report, no LUT total; {_FIX}")
        sources.append(opath)
    wns = fmax = None
    tpath = rdir / TIMING_FILE
    if tpath.is_file():
        wns = read_wns(tpath)
        # FINN's formula for fmax from slack (finn.util.vivado.parse_ooc_synth_results)
        fmax = 1000.0 / (clock_ns - wns) if clock_ns - wns > 0 else None
        sources.append(tpath)
    elif ooc is not None:
        wns = ooc.get("WNS")
        fmax = ooc.get("fmax_mhz")
    if not sources:
        return None
    per_node = per_node or {}
    top = per_node.get(TOP)
    shell = {k: v for k, v in per_node.items() if k.startswith("top_") and k != TOP}
    layers = {k: v for k, v in per_node.items() if k != TOP and k not in shell}
    return Synth(
        sources=sources,
        layers=layers,
        top=top,
        shell=shell,
        ooc=ooc,
        wns_ns=wns,
        fmax_mhz=fmax if fmax is None or math.isfinite(fmax) else None,
    )
