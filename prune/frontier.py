"""``bnnflow frontier``: the accuracy-vs-hardware front of pruning a checkpoint to fit a board.

What pruning buys is hardware, so a method is judged by the accuracy it keeps
at a LUT and BRAM18 figure, not at a PFR. A front is one *point* per
(budget, method, seed): prune, fine-tune (the same training budget for every
point), build (``bnnflow build``'s flow, no Vivado), simulate bit-exactly
(``bnnflow sim``) and record accuracy and FINN's estimates. Methods:

* ``learned``: ``bnnflow prune --fit BOARD --target-fps F --budget B`` (the
  subsidiary probe's counts of least predicted loss within FINN's budget);
* ``uniform``: the learned gates at the learned point's PFR, split evenly over
  the layers (what the counts are worth);
* ``msf-cascade`` and ``random``: rule-based and random selection at exactly
  the learned point's per-layer widths (what the learned choice of filters is
  worth);
* ``unpruned`` (always, once per seed): the source network through the same
  stages and fine-tune at PFR 0, the equally trained control.

The baselines depend on their learned point's widths, so they run after it;
every other point is independent. Points run as Dask distributed tasks: on a
local cluster of worker processes by default (no setup), or on the cluster
whose scheduler ``--scheduler ADDRESS`` names (e.g. ``dask-jobqueue``'s
``SLURMCluster(...).scheduler_address``; OUT must then be on a file system
every worker sees, and bnnflow installed there).

Each point writes ``OUT/points/<name>.json`` atomically when it is done,
keyed by a hash of everything that decides it (the front's options, the
point, the input checkpoint's bytes and, for a baseline, its learned point's
key). A rerun reuses every point whose key matches and computes the rest;
a point interrupted mid-way continues from its pruning state
(``OUT/points/<name>/prune/state.pt``) and its build. Accuracy is the test
set's, through the simulator; the held-out figure is on the training images
``--holdout`` kept out of every step (the fine-tune's epoch choice uses them,
never the test set).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# torch-backed modules (bnnflow.checkpoint, ...) are imported where used: the CLI's parser reads FrontConfig
from bnnflow import outdir, validate
from bnnflow.errors import BnnflowError
from bnnflow.files import atomic_write, sha256_file
from prune.config import PruneConfig

METHODS = ("learned", "uniform", "msf-cascade", "random")
CONTROL = "unpruned"
POINT_FORMAT = "bnnflow-frontier-point-1"
POINTS_DIR = "points"
CONNECT_TIMEOUT_S = 20


@dataclass(frozen=True)
class FrontConfig:
    """Everything that decides a front's points (not where or on how many workers they run)."""

    board: str
    target_fps: float
    budgets: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    methods: tuple[str, ...] = METHODS
    clock_ns: float = 10.0
    granularity: int = 1
    stage_samples: int | None = 10000
    sub_epochs: int = 1
    stage_epochs: int = 1
    batch_size: int = 100
    finetune_epochs: int = 0
    finetune_lr: float = 1e-3
    holdout: int = 0
    train_limit: int | None = None  # first N training images only (after the held-out ones)
    eval_limit: int = 2000  # test images of the per-stage monitor
    sim_limit: int | None = None  # test images through the simulator (None: all)
    finn_limit: int = 3  # of those, through FINN's execute_onnx too (agree_with_finn)
    data_dir: str | None = None

    def validate(self) -> None:
        """Every option, before any work: one error naming the option."""
        from build_flows.boards import BOARDS
        from prune import allocation

        if self.board not in BOARDS:
            raise BnnflowError(f"--board {self.board!r}: choose one of {', '.join(BOARDS)}")
        validate.number(self.target_fps, "--target-fps", 0.0, 1e9 / self.clock_ns, lo_open=True)
        if not self.budgets:
            raise BnnflowError("--budgets lists no budget: give e.g. --budgets lut=0.5x,bram=0.5x lut=0.3x,bram=0.3x")
        if len(set(self.budgets)) != len(self.budgets):
            raise BnnflowError(f"--budgets lists a budget twice: {' '.join(self.budgets)}")
        for b in self.budgets:
            allocation.parse_budget(b)  # its error names the budget
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise BnnflowError(f"--seeds {','.join(map(str, self.seeds))}: give distinct non-negative integers")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            raise BnnflowError(
                f"--methods {','.join(self.methods)}: give distinct names among {', '.join(METHODS)} "
                f"(the unpruned control always runs)"
            )
        if "learned" not in self.methods:
            raise BnnflowError(
                f"--methods {','.join(self.methods)}: the baselines are pruned to the learned "
                "point's widths, so 'learned' must be among them"
            )
        if self.train_limit is not None and self.train_limit < 1:
            raise BnnflowError(f"--train-limit {self.train_limit}: give a positive number of images")
        validate.count(self.finn_limit, "--finn-limit", 0)
        for point in (Point(self.budgets[0], "learned", self.seeds[0]), Point(None, CONTROL, self.seeds[0])):
            prune_config(self, point, None).validate()  # the pruning options, as `bnnflow prune` checks them

    def key_fields(self) -> dict[str, Any]:
        """The options a point's result depends on (not the data folder's location)."""
        d = asdict(self)
        for k in ("budgets", "seeds", "methods", "data_dir"):
            d.pop(k)
        return d


@dataclass(frozen=True)
class Point:
    budget: str | None  # None: the unpruned control
    method: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.method} {self.budget or '-'} seed {self.seed}"

    @property
    def slug(self) -> str:
        budget = "".join(c if c.isalnum() or c in ".x" else "_" for c in self.budget) if self.budget else "none"
        return f"{self.method}-{budget}-seed{self.seed}"


def plan(front: FrontConfig) -> list[Point]:
    """The front's points: per seed the control, per budget the learned point and its baselines."""
    out = []
    for seed in front.seeds:
        out.append(Point(None, CONTROL, seed))
        for budget in front.budgets:
            out += [Point(budget, m, seed) for m in ("learned", *[m for m in front.methods if m != "learned"])]
    return out


def point_key(front: FrontConfig, point: Point, source_sha256: str, learned_key: str | None) -> str:
    """Hash of everything that decides the point; a baseline's includes its learned point's key."""
    payload = {
        "format": POINT_FORMAT,
        "front": front.key_fields(),
        "point": asdict(point),
        "source_sha256": source_sha256,
        "learned": learned_key,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def prune_config(front: FrontConfig, point: Point, learned: dict[str, Any] | None) -> PruneConfig:
    """The ``bnnflow prune`` run of a point (``learned``: the record of its learned point, for the
    baselines' counts)."""
    common: dict[str, Any] = dict(
        granularity=front.granularity,
        stage_samples=front.stage_samples,
        sub_epochs=front.sub_epochs,
        main_epochs=front.stage_epochs,
        batch_size=front.batch_size,
        finetune_epochs=front.finetune_epochs,
        finetune_lr=front.finetune_lr,
        holdout=front.holdout,
        eval_limit=front.eval_limit,
        seed=point.seed,
        data_dir=front.data_dir,
        clock_ns=front.clock_ns,
        extra={} if front.train_limit is None else {"train_limit": front.train_limit},
    )
    if point.method == "learned":
        return PruneConfig(
            method="subsidiary",
            target_pfr=None,
            allocation="fit",
            fit_board=front.board,
            fit_fps=front.target_fps,
            fit_budget=point.budget,
            **common,
        )
    if point.method == CONTROL:
        return PruneConfig(method="subsidiary", target_pfr=0.0, **common)
    assert learned is not None, "a baseline needs its learned point"
    if point.method == "uniform":
        return PruneConfig(method="subsidiary", target_pfr=learned["pfr"], **common)
    per_layer = {
        name: (learned["original"][name] - k) / learned["original"][name] for name, k in learned["kept"].items()
    }
    return PruneConfig(method=point.method, target_pfr=per_layer, **common)


# ---------------------------------------------------------------- one point (runs on a worker)
def _read_point(path: Path, key: str) -> dict[str, Any] | None:
    """The finished point at ``path`` if it is the one ``key`` names, else None (recompute it)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if isinstance(rec, dict) and rec.get("format") == POINT_FORMAT and rec.get("key") == key:
        return rec
    return None


def point_path(out: Path, point: Point, key: str) -> Path:
    return out / POINTS_DIR / f"{point.slug}-{key[:10]}.json"


def _heldout_accuracy(ckpt: Path, front: FrontConfig) -> tuple[float | None, int]:
    """Accuracy on the training images ``--holdout`` kept out of every step (None without them)."""
    from bnnflow import checkpoint, data
    from bnnflow.evaluate import accuracy

    if not front.holdout:
        return None, 0
    net, _ = checkpoint.load(ckpt)
    _, held = data.split_holdout(data.load(net.dataset, "train", front.data_dir), front.holdout)
    assert held is not None
    return accuracy(net, held), len(held)


def run_point(
    front: FrontConfig,
    point: Point,
    key: str,
    source: str,
    out: str,
    cost_cache: str,
    learned: dict[str, Any] | None,
    threads: int | None,
) -> dict[str, Any]:
    """Prune, fine-tune, build and simulate one point; write and return its record. Resumes a
    point interrupted before (pruning state, finished build). Its output goes to its log file."""
    import torch

    from bnnflow.train import machine
    from prune.pipeline import prune_checkpoint
    from reports.sweep import run_builds

    out_dir = Path(out)
    path = point_path(out_dir, point, key)
    if (rec := _read_point(path, key)) is not None:
        return rec
    work = path.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    if threads is not None:
        import numba

        torch.set_num_threads(threads)
        # numba fills its config module at run time, so its types lack the setting
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))  # type: ignore[attr-defined]
    t0 = time.time()
    cfg = prune_config(front, point, learned)
    ckpt = work / "pruned.pt"
    with (
        (work / "log.txt").open("a") as log_file,
        contextlib.redirect_stdout(log_file),
        contextlib.redirect_stderr(log_file),
    ):

        def log(line: str) -> None:
            print(line, flush=True)

        log(f"== {point.label} (key {key}) at {time.strftime('%Y-%m-%dT%H:%M:%S')}")
        summary = prune_checkpoint(source, cfg, ckpt, work / "prune", resume=True, log=log, cost_cache=cost_cache)
        assert summary is not None  # no max_stages: it runs to the end
        build = run_builds([ckpt], front.board, [front.target_fps], work, front.clock_ns, ["build"])[0].builds[0]
        from hw.run import sim_report

        sim = sim_report(build.root, front.data_dir, front.sim_limit, finn_limit=front.finn_limit)
        heldout, heldout_n = _heldout_accuracy(ckpt, front)
    pruning = summary["pruning"]
    fit = pruning.get("fit") or (learned or {}).get("fit")
    limits = fit["limits"] if fit else None
    lut, bram = float(build.total.get("LUT", 0)), float(build.total.get("BRAM_18K", 0))
    rec = {
        "format": POINT_FORMAT,
        "key": key,
        "label": point.label,
        **asdict(point),
        "source": source,
        "learned_key": None if learned is None else learned["key"],
        "front": front.key_fields(),
        "prune_config": pruning["config"],
        "widths": summary["widths"],
        "kept": pruning["kept"],
        "original": {name: pruning["original_widths"][i] for name, i in _width_index(summary).items()},
        "pfr": pruning["pfr"],
        "fit": pruning.get("fit"),
        "limits": limits,
        "within_budget": None if limits is None else (lut <= limits["LUT"] and bram <= limits["BRAM_18K"]),
        "lut": lut,
        "bram18": bram,
        "dsp": float(build.total.get("DSP", 0)),
        "estimated_fps": float(build.performance["estimated_throughput_fps"]),
        "test_accuracy": sim["accuracy"],
        "test_n": sim["n"],
        "torch_test_accuracy": summary["accuracy"],
        "torch_test_n": summary["n"],
        "heldout_accuracy": heldout,
        "heldout_n": heldout_n,
        "agree_with_finn": sim["agree_with_finn"],
        "finn_n": sim["finn_n"],
        "agree_with_torch": sim["agree_with_torch"],
        "checkpoint": str(ckpt),
        "build_dir": str(build.root),
        "log": str(work / "log.txt"),
        "wall_time_s": round(time.time() - t0, 1),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": os.uname().nodename,
        # float kernels differ between CPU families: a point recomputed elsewhere is another sample
        "machine": machine(torch.device("cpu")),
        "pid": os.getpid(),
    }
    text = json.dumps(rec, indent=2, sort_keys=True)
    atomic_write(path, text)
    return json.loads(text)  # what a rerun reads back, exactly


def _width_index(summary: dict[str, Any]) -> dict[str, int]:
    """Prunable layer name -> index into the widths, from the source network's architecture."""
    import models
    from prune.topology import prunable_layers

    net = models.build(summary["arch"], widths=summary["pruning"]["original_widths"])
    return {layer.name: layer.width_index for layer in prunable_layers(net)}


# ---------------------------------------------------------------- the front (runs here)
def check_budgets(
    source: dict[str, Any], ckpt: Path, front: FrontConfig, cache: Path, log: Callable[[str], None]
) -> dict[str, dict[str, float]]:
    """FINN's limits of every budget, each checked reachable by the cost model (whose layer probes
    land in ``cache``, so the learned points find them there): an unreachable budget is one error
    before any point runs."""
    from bnnflow import checkpoint
    from build_flows.cost import chain_arch, finn_estimates
    from prune import allocation
    from prune.topology import prunable_layers

    net, _ = checkpoint.from_dict(source, str(ckpt))
    chain_arch(net.arch)
    layers = prunable_layers(net)
    names, index = [la.name for la in layers], {la.name: la.width_index for la in layers}
    unpruned = finn_estimates(net, front.board, front.target_fps, front.clock_ns)["estimate_layer_resources"]["total"]
    limits = {}
    for b in front.budgets:
        try:
            _, limits[b] = allocation.fit_cost_model(
                net.arch,
                net.widths,
                names,
                index,
                front.granularity,
                front.board,
                front.target_fps,
                front.clock_ns,
                b,
                unpruned,
                cache,
                log,
            )
        except BnnflowError as exc:
            raise BnnflowError(f"--budgets {b}: {exc}") from None
    return limits


@contextlib.contextmanager
def client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A Dask client: of the cluster at ``scheduler``, or of a local cluster of ``workers`` worker
    processes (one task each) that is shut down with the block."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            c = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise BnnflowError(
                f"--scheduler {scheduler}: cannot connect to a Dask scheduler there ({exc}); start "
                "one (`dask scheduler`, or dask-jobqueue's cluster.scheduler_address) or drop "
                "--scheduler for a local cluster"
            ) from None
        with c:
            yield c
        return
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


def run_front(
    ckpt: Path | str,
    front: FrontConfig,
    out: Path | str,
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    cost_cache: Path | str | None = None,
    on_point: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Compute (or reuse) every point of the front and write its report into ``out``; returns the
    point records in plan order. ``workers``: local worker processes (default: the cores);
    ``threads``: torch/numba threads per point (default: cores / workers on a local cluster, the
    worker's own default on a remote one); ``cost_cache``: the FINN cost model's folder of probed layer
    graphs, shareable between fronts and prune runs (default ``out/finn_cost``). ``on_point`` sees
    each record as it arrives."""
    from reports.frontier import write_front

    ckpt, out = Path(ckpt), Path(out)
    front.validate()
    if scheduler is not None and workers is not None:
        raise BnnflowError("--workers sizes the local cluster; a --scheduler's cluster has its own workers")
    if workers is not None and workers < 1:
        raise BnnflowError(f"--workers {workers}: give a positive number of worker processes")
    if threads is not None and threads < 1:
        raise BnnflowError(f"--threads {threads}: give a positive number of threads per point")
    if not ckpt.is_file():
        raise BnnflowError(f"{ckpt}: file not found (give the bnnflow checkpoint whose front to compute)")
    from bnnflow import checkpoint

    source = checkpoint.read_raw(ckpt)
    cores = os.cpu_count() or 1
    if scheduler is None:
        workers = workers or cores
        threads = threads or max(1, cores // workers)
    with outdir.writing(out, "--out") as out:
        sha = sha256_file(ckpt)
        cache = Path(cost_cache).absolute() if cost_cache is not None else out / "finn_cost"
        limits = check_budgets(source, ckpt, front, cache, log)
        points = plan(front)
        keys: dict[Point, str] = {}
        for p in points:  # a learned point comes before its baselines in the plan
            learned = None if p.method in ("learned", CONTROL) else keys[Point(p.budget, "learned", p.seed)]
            keys[p] = point_key(front, p, sha, learned)
        records = {p: r for p in points if (r := _read_point(point_path(out, p, keys[p]), keys[p])) is not None}
        todo = [p for p in points if p not in records]
        log(f"frontier: {len(points)} points, {len(records)} reused, {len(todo)} to compute in {out / POINTS_DIR}")
        failed: dict[Point, str] = {}
        if todo:
            _compute(todo, records, failed, keys, front, ckpt, out, cache, scheduler, workers, threads, on_point, log)
        done = [records[p] for p in points if p in records]
        files = write_front(done, front, limits, out, str(ckpt))
        log(f"frontier: wrote {files[0]}, {files[1]}, {files[2]}")
        if failed:
            raise BnnflowError(
                f"{len(failed)} of {len(points)} points failed ("
                + "; ".join(f"{p.label}: {why}" for p, why in failed.items())
                + "); the others are in the report; see each "
                "point's log.txt under OUT/points/ and rerun the same command to retry them"
            )
        return done


def _compute(
    todo: list[Point],
    records: dict[Point, dict[str, Any]],
    failed: dict[Point, str],
    keys: dict[Point, str],
    front: FrontConfig,
    ckpt: Path,
    out: Path,
    cache: Path,
    scheduler: str | None,
    workers: int | None,
    threads: int | None,
    on_point: Callable[[dict[str, Any]], None] | None,
    log: Callable[[str], None],
) -> None:
    """Submit the missing points to Dask (a baseline after its learned point, as a dependency) and
    collect them as they finish; a failed point is noted and the others go on."""
    from distributed import as_completed

    from bnnflow.progress import progress

    with client(scheduler, workers) as c:
        futures: dict[Point, Any] = {}
        for p in todo:
            learned: Any = None
            if p.method not in ("learned", CONTROL):
                lp = Point(p.budget, "learned", p.seed)
                learned = records.get(lp) or futures[lp]
            futures[p] = c.submit(
                run_point,
                front,
                p,
                keys[p],
                str(ckpt.absolute()),
                str(out),
                str(cache),
                learned,
                threads,
                key=f"frontier-{keys[p]}",
                pure=False,
            )
        which = {f.key: p for p, f in futures.items()}
        for n, fut in enumerate(
            progress(as_completed(list(futures.values())), total=len(futures), desc="frontier points"), 1
        ):
            p = which[fut.key]
            try:
                rec = fut.result()
            except Exception as exc:  # a point's own error (or its learned point's); the others go on
                failed[p] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                log(f"[{n}/{len(futures)}] {p.label}: FAILED ({failed[p]})")
                continue
            records[p] = rec
            log(
                f"[{n}/{len(futures)}] {p.label}: test {rec['test_accuracy']:.4f}, LUT {rec['lut']:,.0f}, "
                f"BRAM18 {rec['bram18']:,.0f}, {rec['estimated_fps']:,.0f} FPS [{rec['wall_time_s']:.0f}s]"
            )
            if on_point is not None:
                on_point(rec)
