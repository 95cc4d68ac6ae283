"""Compile one RTL node's generated HDL with Verilator into the stream harness, cached.

The HDL is exactly what FINN's code generation listed for the node
(``get_rtl_file_list``: its generated wrapper with the parameters FINN wrote,
plus the finn-rtllib sources it instantiates). Compiling takes seconds to a
minute per node while running takes milliseconds, so executables are kept in
``<cache>/rtl/<key>/`` where the key hashes every HDL file's contents, the top
module, the port header, the harness source, the compiler flags and
Verilator's version: the same node in a second run (or in another build with
the same parameters) is not compiled again, and any edit to a wrapper is.
Verilator 5.006 (Debian bookworm's) is the first to keep unpacked structs
unpacked (its changelog: "Support packed structs (#3802)"; before, it packed
them all), and its C++ for an assignment pattern to one does not compile
(``fmpadding.sv``'s ``buf_t``: ``no match for 'operator='``); ``--structs-packed``
packs them as every Verilator before it did, which changes no bit of a struct
that never leaves its module (finn-rtllib's never do). Two finn-rtllib sources
need a change Verilator 5.006 accepts, made in a copy by :data:`VERILATOR_COMPAT`
(the installed file stays as it is, and the swap is part of the cache key):
``dwc/hdl/vpc.sv`` (the width converter, also behind ``Reshape_rtl``) computes a
parameter with a recursive constant function (``gcd``), which Verilator
rejects, so the same Euclid loop is swapped in written iteratively; and
``fifo/hdl/fifo.sv`` (``StreamingFIFO_rtl``) shifts its SRL with an
unpacked-array concatenation of a slice (``{ idat, A[0:DEPTH_IMPL-2] }``),
which Verilator 5.006 takes for an assignment pattern missing elements, so
the same shift is written element by element. :data:`SIMULATION_ONLY` names
the listed files the HDL instantiates only for FINN's own simulation.
Memory files the HDL reads with ``$readmemh`` at start-up (thresholds) are read
at run time from the node's code generation folder, so they are part of the
run, not of the key.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bnnflow.errors import BnnflowError
from bnnflow.files import cache_dir, dir_mode

HARNESS = Path(__file__).with_name("harness.cpp")
EXE_NAME = "harness"
# -O1: the harness runs a few images; a faster compile matters more than a faster simulation.
CFLAGS = ("-O1", "-std=c++17")
VERILATOR_FLAGS = (
    "--cc",
    "--exe",
    "--build",
    "-j",
    "1",
    "--no-timing",
    "-Wno-fatal",
    "-Wno-lint",
    "-Wno-style",
    "-Wno-MULTIDRIVEN",
    "--x-assign",
    "0",
    "--x-initial",
    "0",
    "--structs-packed",
)
#: file name -> (text as finn-rtllib has it, the same function Verilator 5.006 can elaborate)
VERILATOR_COMPAT = {
    "vpc.sv": (
        "\t\treturn (b == 0)? a : gcd(b, a % b);\n",
        "\t\tint unsigned  t;\n\t\twhile(b != 0) begin\n\t\t\tt = a % b;\n\t\t\ta = b;\n\t\t\tb = t;\n"
        "\t\tend\n\t\treturn a;\n",
    ),
    "fifo.sv": (
        "if(push)  A <= { idat, A[0:DEPTH_IMPL-2] };",
        "if(push) begin\n\t\t\t\tA[0] <= idat;\n"
        "\t\t\t\tfor(int unsigned  i = 1; i < DEPTH_IMPL; i++)  A[i] <= A[i-1];\n\t\t\tend",
    ),
}
#: files FINN lists whose module its wrappers instantiate only under ``ifdef FINN_SIMULATION`` (undefined
#: here): fifo_gauge.sv, the queue that stands in for fifo.sv in FINN's rtlsim, which Verilator 5.006 cannot
#: parse. Left out, the hardware's own FIFO is what runs; a wrapper that did need it fails to elaborate.
SIMULATION_ONLY = frozenset({"fifo_gauge.sv"})
NO_VERILATOR = (
    "verilator not found on PATH: install it (Debian: `apt-get install verilator`, or `make "
    "verilator` as root) to co-simulate the RTL layers"
)


@dataclass(frozen=True)
class Ports:
    """The node's clock, reset and its one input and one output AXI stream, as FINN names them."""

    clk: str
    rst_n: str
    s_axis: str  # e.g. "in0_V"
    m_axis: str  # e.g. "out0_V"
    in_bytes: int  # TDATA width in bytes (FINN pads stream widths to whole bytes)
    out_bytes: int

    def header(self) -> str:
        """ports.h: the macros harness.cpp is written against."""
        return "\n".join(
            [
                "#pragma once",
                f"#define CLK {self.clk}",
                f"#define RST_N {self.rst_n}",
                f"#define IN_DATA {self.s_axis}_TDATA",
                f"#define IN_VALID {self.s_axis}_TVALID",
                f"#define IN_READY {self.s_axis}_TREADY",
                f"#define OUT_DATA {self.m_axis}_TDATA",
                f"#define OUT_VALID {self.m_axis}_TVALID",
                f"#define OUT_READY {self.m_axis}_TREADY",
                f"#define IN_BYTES {self.in_bytes}",
                f"#define OUT_BYTES {self.out_bytes}",
                "",
            ]
        )


@dataclass(frozen=True)
class Compiled:
    exe: Path
    key: str
    seconds: float  # compile time, 0.0 when it came from the cache
    cached: bool


def verilator() -> str:
    """The verilator executable; one BnnflowError line when it is missing."""
    exe = shutil.which("verilator")
    if exe is None:
        raise BnnflowError(NO_VERILATOR)
    return exe


@functools.cache
def verilator_version() -> str:
    out = subprocess.run([verilator(), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def cache_key(hdl: list[Path], top: str, ports: Ports) -> str:
    """Hex SHA-256 over everything that decides the executable."""
    h = hashlib.sha256()
    for part in (verilator_version(), top, ports.header(), " ".join(VERILATOR_FLAGS + CFLAGS)):
        h.update(part.encode() + b"\0")
    h.update(HARNESS.read_bytes())
    h.update(repr(sorted(VERILATOR_COMPAT.items())).encode())
    for path in hdl:
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:32]


def _compatible(path: Path, work: Path) -> Path:
    """``path``, or a copy in ``work`` with the :data:`VERILATOR_COMPAT` change when it applies."""
    if path.name not in VERILATOR_COMPAT:
        return path
    old, new = VERILATOR_COMPAT[path.name]
    text = path.read_text()
    if old not in text:
        return path
    copy = work / "compat" / path.name
    copy.parent.mkdir(exist_ok=True)
    copy.write_text(text.replace(old, new))
    return copy


def compile_node(name: str, hdl: list[Path], top: str, ports: Ports) -> Compiled:
    """The harness executable for ``top`` (from the cache, else compiled into it atomically)."""
    hdl = [path for path in hdl if path.name not in SIMULATION_ONLY]
    for path in hdl:
        if not path.is_file():
            raise BnnflowError(
                f"{path}: HDL file of node {name} is missing; rebuild with `bnnflow build` (code generation writes it)"
            )
    key = cache_key(hdl, top, ports)
    final = cache_dir() / "rtl" / key
    exe = final / EXE_NAME
    if exe.is_file():
        return Compiled(exe, key, 0.0, True)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
    try:
        os.chmod(work, dir_mode())  # mkdtemp's 0o700 would hide the cache from other users of it
        (work / "ports.h").write_text(ports.header())
        shutil.copy(HARNESS, work / HARNESS.name)
        sources = [_compatible(path, work) for path in hdl]
        cmd = [
            verilator(),
            *VERILATOR_FLAGS,
            "--top-module",
            top,
            "--prefix",
            "Vtop",
            "-Mdir",
            str(work / "obj"),
            "-CFLAGS",
            " ".join(CFLAGS + (f"-I{work}",)),
            "-o",
            str(work / EXE_NAME),
            *map(str, sources),
            str(work / HARNESS.name),
        ]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
        if res.returncode != 0 or not (work / EXE_NAME).is_file():
            tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-4:])
            raise BnnflowError(f"{name}: Verilator could not compile {top} from {hdl[-1].parent}: {tail}")
        shutil.rmtree(work / "obj")  # the object files are 10-100x the executable
        try:
            os.rename(work, final)
        except OSError:  # another process put the same key there first: keep theirs
            if not exe.is_file():
                raise
        return Compiled(exe, key, seconds, False)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
