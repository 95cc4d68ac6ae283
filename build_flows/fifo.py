"""FIFO sizing of a bitfile build: finn-plus's options, checked, and a time limit on FINN's sizing.

After IP generation FINN inserts a FIFO in front of every layer and sizes it
in ``step_set_fifo_depths``. Its default strategy, ``distributed_sim``,
simulates every layer (XSI, Vivado synthesis of a functional model per layer)
and can run for hours on a large design. bnnflow exposes finn-plus's own
choices as they are (``DataflowBuildConfig.auto_fifo_strategy``,
``auto_fifo_depths`` with ``fifo_config_file``) and puts a wall-clock limit on
that one step: bnnflow runs FINN's ``step_generate_hardware`` as FINN's own
functions with ``step_set_fifo_depths`` inside :func:`time_limit`; when it
runs past the limit, every process the step started is stopped and the build
ends with one line saying what to do instead. (A hand-off continued with
FINN's own ``finn build`` runs FINN's step, without that limit.)

Default for Pynq-sized designs: ``distributed_sim`` (FINN's default; depths
that keep full throughput and cannot deadlock a forked graph) limited to
:data:`DEFAULT_TIMEOUT_MIN` minutes. ``force_minimal_fifos`` skips the
simulation (seconds) at the price of throughput, and can deadlock graphs with
forks (ResNet's residual streams); a depth file (FINN's
``report/fifo_sizing.json`` of an earlier build) sets the depths directly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow.errors import BnnflowError
from bnnflow.files import read_json

#: finn-plus 1.6.1's ``AutoFIFOSizingMethod`` values (a test checks them against FINN's enum;
#: spelled out here so that the command line does not import FINN to list them).
STRATEGIES = ("distributed_sim", "live_fifo", "force_minimal_fifos")
DEFAULT_STRATEGY = "distributed_sim"
#: Minutes FINN's FIFO sizing may run before bnnflow stops it (0: no limit).
DEFAULT_TIMEOUT_MIN = 60.0
#: FINN's build step whose FIFO sizing (``step_set_fifo_depths``) the time limit applies to.
HARDWARE_STEP = "step_generate_hardware"
#: Keys of FINN's FIFO depth file that ``ApplyFIFODepthsFromFile`` reads per FIFO.
DEPTH_FILE_KEYS = ("fifo_depths", "impl_style", "ram_style")
#: Seconds between SIGTERM and SIGKILL for the processes of a stopped step.
KILL_GRACE_S = 5.0


@dataclass(frozen=True)
class FifoOptions:
    """How FINN sizes the FIFOs: a strategy, or the depths from a file; and the time limit."""

    strategy: str = DEFAULT_STRATEGY
    depths_file: Path | None = None
    timeout_min: float = DEFAULT_TIMEOUT_MIN

    def config_fields(self, depths_file: Path | None) -> dict[str, Any]:
        """The ``DataflowBuildConfig`` fields, with the depth file at ``depths_file`` (a copy)."""
        import finn.builder.build_dataflow_config as bc

        if self.depths_file is not None:
            return {"auto_fifo_depths": False, "fifo_config_file": depths_file}
        return {
            "auto_fifo_depths": True,
            "auto_fifo_strategy": bc.AutoFIFOSizingMethod(self.strategy),
            "fifo_config_file": None,
        }

    def record(self) -> dict[str, Any]:
        """What the manifest and the hand-off record about FIFO sizing."""
        return {
            "strategy": None if self.depths_file else self.strategy,
            "depths_file": str(self.depths_file.absolute()) if self.depths_file else None,
            "timeout_min": self.timeout_min,
        }

    def timeout_message(self) -> str:
        """The line a build ends with when FIFO sizing runs past the limit."""
        return (
            f"FINN's FIFO sizing ({self.strategy}) ran past --fifo-timeout {self.timeout_min:g} min and was "
            "stopped; give --fifo-strategy force_minimal_fifos (no sizing: minimal depths, may cost "
            "throughput), --fifo-depths FILE.json (FINN's report/fifo_sizing.json format) or a larger "
            "--fifo-timeout (0: no limit)"
        )

    def hardware_step(self) -> Callable[..., Any]:
        """FINN's ``step_generate_hardware`` (same name) with its FIFO sizing under this time limit.

        For a graph without ``FINNLoop`` nodes (every W1A1 net bnnflow
        builds) FINN's step is: unique node names, ``step_hw_codegen``,
        ``step_hw_ipgen`` (Vitis HLS), ``step_set_fifo_depths``; this runs the
        same FINN functions in that order, the last one limited.
        """
        limit_s, message = self.timeout_min * 60.0, self.timeout_message()

        def step_generate_hardware(model: Any, cfg: Any) -> Any:
            """FINN's step_generate_hardware, its FIFO sizing (step_set_fifo_depths) time-limited."""
            from finn.builder.build_dataflow_steps import step_hw_codegen, step_hw_ipgen, step_set_fifo_depths
            from finn.transformation.qonnx.give_unique_node_names_recursive import GiveUniqueNodeNamesRecursive

            if model.get_nodes_by_op_type("FINNLoop"):
                raise BnnflowError(
                    "the graph has FINNLoop nodes, which bnnflow's FIFO time limit does not "
                    "cover; give --fifo-timeout 0 (FINN's own step_generate_hardware)"
                )
            model = model.transform(GiveUniqueNodeNamesRecursive())
            model = step_hw_codegen(model, cfg)
            model = step_hw_ipgen(model, cfg)
            with time_limit(limit_s, message):
                return step_set_fifo_depths(model, cfg)

        return step_generate_hardware


def fifo_options(
    strategy: str | None, depths_file: Path | str | None, timeout_min: float = DEFAULT_TIMEOUT_MIN
) -> FifoOptions:
    """Checked FIFO options: one of a strategy or a depth file (readable, FINN's format)."""
    if strategy is not None and depths_file is not None:
        raise BnnflowError(
            "give at most one of --fifo-strategy and --fifo-depths (a depth file sizes no FIFOs, it sets them)"
        )
    if strategy is not None and strategy not in STRATEGIES:
        raise BnnflowError(f"unknown FIFO strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if not timeout_min >= 0:
        raise BnnflowError(f"--fifo-timeout must be >= 0 minutes (0: no limit), got {timeout_min}")
    if depths_file is not None:
        depths_file = Path(depths_file)
        read_depths(depths_file)
    return FifoOptions(strategy=strategy or DEFAULT_STRATEGY, depths_file=depths_file, timeout_min=timeout_min)


def read_depths(path: Path) -> dict[str, Any]:
    """A FIFO depth file as FINN's ``ApplyFIFODepthsFromFile`` reads it, checked before FINN runs."""
    data = read_json(path, "not a readable FIFO depth JSON file")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in DEPTH_FILE_KEYS):
        raise BnnflowError(
            f"{path}: a FIFO depth file needs the objects {', '.join(DEPTH_FILE_KEYS)} (FINN's report/fifo_sizing.json)"
        )
    for name, depth in data["fifo_depths"].items():
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise BnnflowError(f"{path}: {name}: FIFO depth must be a positive integer, got {depth!r}")
        missing = [k for k in DEPTH_FILE_KEYS[1:] if name not in data[k]]
        if missing:
            raise BnnflowError(f"{path}: {name}: no entry in {', '.join(missing)}")
    return data


# ---------------------------------------------------------------- the time limit
class _TimeUp(BaseException):
    """Raised in the main thread when the limit passes. A BaseException, so that FINN's
    ``except Exception`` handlers inside the step let it through."""


def _processes() -> dict[tuple[int, int], int]:
    """{(pid, start time): parent pid} of every running process (Linux ``/proc``; empty elsewhere).

    Zombies are left out: they have ended, only their parent has not read their status yet.
    """
    out: dict[tuple[int, int], int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[0] != "Z":
            out[(int(entry.name), int(fields[19]))] = int(fields[1])
    return out


def _descendants() -> set[tuple[int, int]]:
    """(pid, start time) of every process below this one (the start time tells reused pids apart)."""
    procs = _processes()
    children: dict[int, list[tuple[int, int]]] = {}
    for key, ppid in procs.items():
        children.setdefault(ppid, []).append(key)
    found: set[tuple[int, int]] = set()
    todo = [os.getpid()]
    while todo:
        for key in children.get(todo.pop(), []):
            if key not in found:
                found.add(key)
                todo.append(key[0])
    return found


def _stop(procs: set[tuple[int, int]]) -> None:
    """SIGTERM ``procs``, then SIGKILL whichever still runs after :data:`KILL_GRACE_S`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, _ in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + KILL_GRACE_S
        while sig == signal.SIGTERM and time.monotonic() < deadline:
            if not procs & _descendants():
                return
            time.sleep(0.1)


@contextlib.contextmanager
def time_limit(seconds: float, message: str) -> Iterator[None]:
    """Run the block for at most ``seconds`` (0: no limit), else stop it and raise ``BnnflowError(message)``.

    At the limit, a SIGALRM handler stops the processes the block started
    (Vivado, xsim, make; those that ran before stay) and raises in the main
    thread, which interrupts a blocking wait as well as Python code.
    """
    if seconds <= 0:
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        raise BnnflowError("the FIFO sizing time limit needs the main thread; give --fifo-timeout 0")
    before = _descendants()

    def on_alarm(signum: int, frame: Any) -> None:
        _stop(_descendants() - before)
        raise _TimeUp

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _TimeUp:
        raise BnnflowError(message) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
