"""Resource reports (reports/) on real builds of small nets.

Builds are made once per module with bnnflow's build stage
(``build_flows.build.build``, FINN's builder without Vivado): TFC from the
zoo, a TFC with pruned widths (random weights, a pruning record in its
meta) and a narrow CNV. Post-synthesis reports cannot be produced without
Vivado, so ``tests/report_fixtures/`` holds Vivado's and FINN's files for the
TFC build, written in their exact formats (hierarchical utilization XML,
routed timing summary, FINN's OOC JSON).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import copy_build, save_random_net

from bnnflow.errors import BnnflowError
from build_flows.build import build
from build_flows.build_dir import open_build
from reports.finn_reports import read_build
from reports.report import make_report
from reports.sweep import MARKER, make_sweep
from reports.synth import read_synth
from reports.tables import layer_table, summary_table

REPO = Path(__file__).resolve().parent.parent
TFC_CKPT = REPO / "models" / "zoo" / "tfc_w1a1.pt"
FIXTURES = Path(__file__).resolve().parent / "report_fixtures"
BNNFLOW = str(Path(sys.executable).parent / "bnnflow")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PRUNED_TFC = [48, 40, 64]
NARROW_CNV = [16, 16, 32, 32, 32, 32, 64, 64]


def _build(ckpt: Path, out: Path, target_fps: int) -> Path:
    build(ckpt, "Pynq-Z1", out, target_fps=target_fps, n_check=0)
    return out


@pytest.fixture(scope="module")
def pruned_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_net(
        "tfc",
        PRUNED_TFC,
        tmp_path_factory.mktemp("ckpt") / "tfc_pruned.pt",
        3,
        {"accuracy": 0.9, "n": 100, "pruning": {"pfr": 0.15, "method": "test"}},
    )


@pytest.fixture(scope="module")
def tfc(shared_tfc_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_build(shared_tfc_build, tmp_path_factory.mktemp("tfc") / "tfc")


@pytest.fixture(scope="module")
def tfc_pruned(tmp_path_factory: pytest.TempPathFactory, pruned_ckpt: Path) -> Path:
    return _build(pruned_ckpt, tmp_path_factory.mktemp("tfcp") / "tfc_pruned", 10000)


@pytest.fixture(scope="module")
def cnv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cnv")
    ckpt = save_random_net("cnv", NARROW_CNV, root / "cnv.pt", 1, {"accuracy": None, "n": 0})
    return _build(ckpt, root / "cnv", 20000)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


# ---------------------------------------------------------------- numbers come from FINN's files
@pytest.mark.parametrize("which", ["tfc", "cnv"])
def test_tables_hold_finn_numbers(which: str, request: pytest.FixtureRequest) -> None:
    d = request.getfixturevalue(which)
    cycles = _json(d / "report" / "estimate_layer_cycles.json")
    res = _json(d / "report" / "estimate_layer_resources.json")
    perf = _json(d / "report" / "estimate_network_performance.json")
    folding = _json(d / "report" / "auto_folding_config.json")
    b = read_build(d)
    t = layer_table(b)
    layer_rows = t.rows[:-1]
    assert [r[0] for r in layer_rows] == list(cycles)  # every layer, in FINN's order
    for r in layer_rows:
        row = dict(zip(t.columns, r, strict=True))
        name = row["Layer"]
        assert row["Cycles"] == cycles[name]
        assert (row["LUT"], row["BRAM18"], row["DSP"]) == (res[name]["LUT"], res[name]["BRAM_18K"], res[name]["DSP"])
        for attr in ("PE", "SIMD"):
            if attr in folding.get(name, {}):
                assert row[attr] == folding[name][attr], (name, attr)
    total = dict(zip(t.columns, t.rows[-1], strict=True))
    assert (total["LUT"], total["BRAM18"], total["DSP"]) == (
        res["total"]["LUT"],
        res["total"]["BRAM_18K"],
        res["total"]["DSP"],
    )
    assert total["Cycles"] == perf["max_cycles"]
    s = summary_table([b])
    assert s.row("Est. throughput (FPS)")[1] == perf["estimated_throughput_fps"]
    assert s.row("Est. latency (ns)")[1] == perf["estimated_latency_ns"]
    assert s.row("Cycles per frame (II)")[1] == perf["max_cycles"]
    assert s.row("Bottleneck layer")[1] == perf["max_cycles_node_name"]
    assert s.row("LUT % of board (est.)")[1] == pytest.approx(100 * res["total"]["LUT"] / 53200)
    assert s.row("BRAM18 % of board (est.)")[1] == pytest.approx(100 * res["total"]["BRAM_18K"] / 280)
    mvau = [r for r in layer_rows if r[1] == "MVAU_hls"]
    assert mvau and all(dict(zip(t.columns, r, strict=True))["W bits"] in (1, 2) for r in mvau)


def test_accuracy_and_pfr_from_checkpoint_then_simulator(tfc_pruned: Path, tmp_path: Path) -> None:
    b = read_build(tfc_pruned)
    assert (b.quality.accuracy, b.quality.pfr, b.quality.source) == (0.9, 0.15, "checkpoint (tfc_pruned.pt)")
    d = copy_build(tfc_pruned, tmp_path / tfc_pruned.name)
    (d / "sim.json").write_text(json.dumps({"accuracy": 0.8125, "n": 16, "agree_with_torch": 1.0}))
    b = read_build(d)
    assert (b.quality.accuracy, b.quality.n, b.quality.pfr) == (0.8125, 16, 0.15)
    assert b.quality.source.startswith("simulator")


# ---------------------------------------------------------------- the written report
def test_report_side_by_side_and_html_inline(tfc: Path, tfc_pruned: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    files = make_report([tfc, tfc_pruned], out)
    assert {f.name for f in files} >= {"report.md", "report.html", "summary.png", "layers_lut.png"}
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) >= 4 and all(p.read_bytes().startswith(PNG_MAGIC) for p in pngs)
    page = (out / "report.html").read_text()
    srcs = re.findall(r'<img[^>]* src="([^"]*)"', page)
    assert len(srcs) == len(pngs)
    for src in srcs:  # every image inline, none a link to a file
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    md = (out / "report.md").read_text()
    for p in pngs:
        assert f"]({p.name})" in md
    # side by side: delta and ratio of the two builds' FINN totals
    a, b = (_json(d / "report" / "estimate_layer_resources.json")["total"] for d in (tfc, tfc_pruned))
    s = summary_table([read_build(tfc), read_build(tfc_pruned)])
    assert s.columns == ["Figure", "tfc", "tfc_pruned", "Δ tfc_pruned", "× tfc_pruned"]
    assert s.row("BRAM18 (est.)")[1:] == [
        a["BRAM_18K"],
        b["BRAM_18K"],
        b["BRAM_18K"] - a["BRAM_18K"],
        b["BRAM_18K"] / a["BRAM_18K"],
    ]
    assert s.row("PFR (pruned filter ratio)")[1:3] == [None, 0.15]
    assert "| PFR (pruned filter ratio) | – | 0.15 |" in md
    assert "Per layer, side by side: Cycles" in md and "MH tfc_pruned" in md


# ---------------------------------------------------------------- errors name the file
def test_missing_report_file_is_named(tfc: Path, tmp_path: Path) -> None:
    d = copy_build(tfc, tmp_path / tfc.name)
    (d / "report" / "estimate_layer_cycles.json").unlink()
    out = tmp_path / "r"
    with pytest.raises(BnnflowError, match=re.escape(str(d / "report" / "estimate_layer_cycles.json")) + ": missing"):
        make_report([d], out)
    assert not out.exists()  # nothing half-written
    res = subprocess.run([BNNFLOW, "report", str(d), "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "estimate_layer_cycles.json: missing" in res.stderr


@pytest.mark.parametrize(
    "name,content,what",
    [
        ("estimate_layer_resources.json", '{"MVAU_hls_0": {"LUT": 3', "not valid JSON"),
        (
            "estimate_layer_resources.json",
            '{"MVAU_hls_0": {"LUT": "many", "BRAM_18K": 1, "DSP": 0}, "total": {"LUT": 1, "BRAM_18K": 1, "DSP": 0}}',
            "MVAU_hls_0.LUT is 'many'",
        ),
        ("estimate_network_performance.json", '{"max_cycles": 7}', "no 'max_cycles_node_name'"),
        ("estimate_layer_cycles.json", "[1, 2]", "expected an object"),
    ],
)
def test_malformed_report_file_is_named(tfc: Path, tmp_path: Path, name: str, content: str, what: str) -> None:
    d = copy_build(tfc, tmp_path / tfc.name)
    (d / "report" / name).write_text(content)
    with pytest.raises(BnnflowError) as err:
        read_build(d)
    assert str(err.value).startswith(f"{d / 'report' / name}: malformed") and what in str(err.value)


# ---------------------------------------------------------------- post-synthesis
def _with_synth(tfc: Path, tmp_path: Path) -> Path:
    d = copy_build(tfc, tmp_path / tfc.name)
    for f in FIXTURES.iterdir():
        shutil.copy(f, d / "report" / f.name)
    return d


def test_vivado_synthesis_reports_parsed(tfc: Path, tmp_path: Path) -> None:
    d = _with_synth(tfc, tmp_path)
    b = read_build(d)
    s = b.synth
    assert s is not None and [p.name for p in s.sources] == [
        "post_synth_report.xml",
        "ooc_synth_and_timing.json",
        "post_route_timing.rpt",
    ]
    # values as written in the fixture's rows (Vivado's hierarchical utilization)
    assert s.layers["MVAU_hls_0"] == {"LUT": 563, "SRL": 32, "FF": 612, "BRAM_36K": 0, "BRAM_18K": 2, "DSP": 0}
    assert s.layers["Thresholding_rtl_0"]["LUT"] == 506
    assert s.top == {"LUT": 6391, "SRL": 186, "FF": 8315, "BRAM_36K": 4, "BRAM_18K": 5, "DSP": 0}
    assert set(s.shell) == {"top_axi_interconnect_0_0", "top_smartconnect_0_0"}
    assert s.wns_ns == 1.296  # the design summary's WNS, not the async path group's 7.804
    assert s.fmax_mhz == pytest.approx(1000 / (10 - 1.296))
    assert s.ooc == _json(FIXTURES / "ooc_synth_and_timing.json")
    t = layer_table(b)
    row = dict(zip(t.columns, t.row("MVAU_hls_1"), strict=True))
    est = _json(d / "report" / "estimate_layer_resources.json")["MVAU_hls_1"]
    assert (row["LUT"], row["LUT syn"], row["FF syn"], row["RAMB18 syn"]) == (est["LUT"], 402, 455, 1)
    summ = summary_table([b])
    assert summ.row("LUT (synth, whole design)")[1] == 6391
    assert summ.row("LUT (OOC P&R, accelerator)")[1] == 2211
    # FINN's own JSON of the same parse (what step_synthesize_bitfile writes) takes precedence
    xml = d / "report" / "post_synth_report.xml"
    parsed = {"(top)": s.top, **s.shell, **s.layers}
    parsed["MVAU_hls_0"] = dict(parsed["MVAU_hls_0"], LUT=600)
    (d / "report" / "post_synth_resources.json").write_text(json.dumps(parsed, indent=2))
    xml.unlink()
    s2 = read_synth(open_build(d))
    assert s2.layers["MVAU_hls_0"]["LUT"] == 600 and s2.sources[0].name == "post_synth_resources.json"
    make_report([d], tmp_path / "r")
    assert "LUT syn" in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.parametrize(
    "name,content,what",
    [
        ("post_synth_report.xml", "<RptDoc><section><table><tablerow>", "not valid XML"),
        (
            "post_synth_report.xml",
            '<RptDoc><table><tablerow><tableheader contents="Instance"/>'
            '<tableheader contents="Total LUTs"/></tablerow><tablerow>'
            '<tablecell contents="top_wrapper"/><tablecell contents="(top)"/></tablerow>'
            "</table></RptDoc>",
            "lacks a resource column",
        ),
        ("post_route_timing.rpt", "Timing Summary Report\n\nnothing routed\n", "no 'WNS(ns)'"),
        ("ooc_synth_and_timing.json", '{"WNS": 1.0}', "no LUT total"),
    ],
)
def test_malformed_synthesis_file_is_named(tfc: Path, tmp_path: Path, name: str, content: str, what: str) -> None:
    d = _with_synth(tfc, tmp_path)
    (d / "report" / name).write_text(content)
    with pytest.raises(BnnflowError) as err:
        read_build(d)
    assert str(err.value).startswith(f"{d / 'report' / name}: ") and what in str(err.value)


# ---------------------------------------------------------------- sweep
def test_sweep_equal_fps_and_resume(pruned_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sweep"
    fps = [2000.0, 20000.0]
    files = make_sweep([TFC_CKPT, pruned_ckpt], "Pynq-Z1", fps, out)
    assert "4 built, 0 reused" in capsys.readouterr().out
    assert [f.name for f in files] == ["sweep.md", "sweep.html", "sweep.png", "sweep.json"]
    assert (out / "sweep.png").read_bytes().startswith(PNG_MAGIC)
    data = _json(out / "sweep.json")
    for net in data:
        pts = net["points"]
        for p in pts:  # the points are FINN's figures of each build
            perf = _json(Path(p["dir"]) / "report" / "estimate_network_performance.json")
            assert p["estimated_fps"] == perf["estimated_throughput_fps"] >= p["target_fps"]
            assert p["LUT"] == _json(Path(p["dir"]) / "report" / "estimate_layer_resources.json")["total"]["LUT"]
        assert pts[1]["LUT"] > pts[0]["LUT"]  # more throughput, more parallelism
    md = (out / "sweep.md").read_text()
    assert "Equal throughput" in md and "Equal resources" in md
    # resume: nothing rebuilt; an unmarked (interrupted) build is redone
    marker = out / "tfc_w1a1" / "fps_2000" / MARKER
    before = marker.stat().st_mtime_ns
    make_sweep([TFC_CKPT, pruned_ckpt], "Pynq-Z1", fps, out)
    assert "0 built, 4 reused" in capsys.readouterr().out
    assert marker.stat().st_mtime_ns == before
    (out / "tfc_pruned" / "fps_20000" / MARKER).unlink()
    make_sweep([TFC_CKPT, pruned_ckpt], "Pynq-Z1", fps, out)
    assert "1 built, 3 reused" in capsys.readouterr().out
