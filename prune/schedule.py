"""The pruning run: layer-wise stages, resumable after every stage.

Stages, for the learned method (``subsidiary``) and the layer-wise baselines
(``msf-layerwise``, ``random``), for every prunable layer i bottom-up:

* ``select i``: choose the kept filters of layer i and fix its gates.
  ``subsidiary`` first trains the gate parameters ``m_i`` (the main network
  frozen, in eval mode: BatchNorm uses its running statistics, no dropout;
  layers below keep their fixed gates, layers above run ungated) with
  cross-entropy + distillation from the unpruned network + a kept-filter
  penalty ``lambda * sum_k g_k`` (``--sparsity``, default 0). The gates are
  budgeted (see :mod:`prune.gates`): exactly the kept count the PFR target and
  granularity ask for is open at every step, and those filters are kept (PFR
  control, **our choice**).
  The baselines pick by L1 norm of latent weights or at random.
* ``retrain i``: gates fixed; layer i, every layer above it and the
  classifier retrain (cross-entropy + distillation) at ``lr_main``; layers
  below stay frozen.

With ``--allocation learned`` or ``learned-mac`` (any method) an ``allocate`` stage comes first:
the subsidiary component probes every layer and decides how many filters each
keeps at the global target (:mod:`prune.allocation`); otherwise every layer
keeps the same share (:func:`prune.pfr.kept_counts`). With ``--fit BOARD
--target-fps F`` (allocation ``fit``) there is no PFR target: the allocate
stage first checks with FINN's cost model (:mod:`build_flows.cost`) that the
budget can be met, then probes the layers and keeps the counts of least
predicted loss whose FINN estimate fits the budget at F FPS.

``msf-cascade`` selects every layer by L1 norm at once (``select all``) and
then retrains all prunable layers upward in as many stages as the layer-wise
methods have retraining stages, so every method gets the same retraining
budget **(our choice)**.

After every stage the gated network, its gates and the history are saved to
``work_dir/state.pt``; a resumed run continues from the last finished stage
and, since every stage re-seeds its data subset, shuffling and dropout from
``seed`` and the stage number, ends with the same network as an
uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bnnflow import checkpoint, data
from bnnflow.errors import BnnflowError
from bnnflow.evaluate import accuracy
from bnnflow.train import TrainConfig, train_epoch
from models.nets import BinaryNet
from prune import allocation, baselines, pfr
from prune.config import PruneConfig, with_defaults
from prune.gates import GateSet
from prune.losses import distillation_loss, objective
from prune.topology import unit_at

PROBE_SAMPLES = 1000  # training images on which the allocation probe measures the loss
STATE_FORMAT = "bnnflow-prune-state"


@dataclass(frozen=True)
class Stage:
    kind: str  # allocate | select | retrain
    layer: int  # index into the prunable layers (allocate, select: -1 = all at once)

    def label(self, names: list[str]) -> str:
        return f"{self.kind} {'all' if self.layer < 0 else names[self.layer]}"


def stages(method: str, n_layers: int, allocation_mode: str = "uniform") -> list[Stage]:
    """The stage list of ``method`` for a network with ``n_layers`` prunable layers."""
    first = [Stage("allocate", -1)] if allocation_mode != "uniform" else []
    if method == "msf-cascade":
        return first + [Stage("select", -1)] + [Stage("retrain", 0)] * n_layers
    return first + [s for i in range(n_layers) for s in (Stage("select", i), Stage("retrain", i))]


def _random_subset(split: data.Split, n: int | None, seed: int) -> data.Split:
    """``n`` samples of ``split`` drawn at random (in their original order)."""
    if n is None or n >= len(split):
        return split
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed)).numpy()[:n]
    idx.sort()
    return data.Split(np.ascontiguousarray(split.images[idx]), split.labels[idx])


def _set_trainable(net: BinaryNet, gates: GateSet, from_unit: str | None) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze the units from ``from_unit`` on and the classifier."""
    for p in list(net.parameters()) + list(gates.parameters()):
        p.requires_grad_(False)
    if from_unit is None:
        return []
    units = net.binary_units()
    start = units.index(unit_at(net, from_unit))
    params = [p for u in units[start:] for p in u.parameters()] + list(net.classifier.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


class Pruner:
    """One pruning run of ``source`` (an unpruned or pruned checkpoint dict)."""

    def __init__(
        self,
        source: dict[str, Any],
        cfg: PruneConfig,
        work_dir: Path | str,
        log: Callable[[str], None] = print,
        cost_cache: Path | str | None = None,
    ) -> None:
        cfg.validate()
        self.cfg, self.work_dir, self.log = cfg, Path(work_dir), log
        #: where FINN's cost model keeps its probed layer graphs (allocation "fit")
        self.cost_cache = Path(cost_cache) if cost_cache is not None else self.work_dir / "finn_cost"
        self.source = source
        self.teacher, self.source_meta = checkpoint.from_dict(source, "source checkpoint")
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.net, _ = checkpoint.from_dict(source, "source checkpoint")
        self.gates = GateSet(self.net, cfg.gate_init)
        self.names = [layer.name for layer, _ in self.gates]
        widths = {layer.name: self.net.widths[layer.width_index] for layer, _ in self.gates}
        self.original = widths
        if cfg.allocation == "fit":
            from build_flows.cost import chain_arch

            chain_arch(self.net.arch)  # refuse a network the cost model cannot cost before any work
        # with "fit", every layer whole (at the granularity) until the allocate stage decides
        self.targets = pfr.kept_counts(widths, 0.0 if cfg.target_pfr is None else cfg.target_pfr, cfg.granularity)
        self.stages = stages(cfg.method, len(self.names), cfg.allocation)
        self.done, self.wall = 0, 0.0
        self.history: list[dict[str, Any]] = []  # one row per stage run
        dataset = self.net.dataset
        self.train_split, self.holdout = data.split_holdout(data.load(dataset, "train", cfg.data_dir), cfg.holdout)
        self.test_split = data.load(dataset, "test", cfg.data_dir)
        # A random subset: CIFAR-10's test split is ordered by class, its first N are one class.
        self.monitor = _random_subset(self.test_split, cfg.eval_limit, 0)

    # ------------------------------------------------------------ state
    @property
    def state_path(self) -> Path:
        return self.work_dir / "state.pt"

    def save_state(self) -> None:
        checkpoint.atomic_torch_save(
            {
                "format": STATE_FORMAT,
                "config": asdict(self.cfg),
                "source": self.source,
                "done": self.done,
                "history": self.history,
                "wall_time_s": self.wall,
                "net": checkpoint.to_dict(self.net, {}),
                "gates": self.gates.state_dict(),
            },
            self.state_path,
        )

    def resume(self) -> bool:
        """Continue from ``state.pt`` if there is one; True if it was loaded."""
        if not self.state_path.is_file():
            return False
        try:
            state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt files
            raise BnnflowError(
                f"{self.state_path}: unreadable pruning state ({type(exc).__name__}); remove it or drop --resume"
            ) from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise BnnflowError(f"{self.state_path}: not a bnnflow pruning state; remove it or drop --resume")
        mine = asdict(self.cfg)
        stored = with_defaults(state["config"])
        if stored != mine:
            diff = sorted(k for k in mine if stored.get(k) != mine[k])
            raise BnnflowError(
                f"{self.state_path}: was started with other options ({', '.join(diff)}); "
                "use the same options, another --work-dir, or drop --resume"
            )
        if not _same_weights(state["source"], self.source):
            raise BnnflowError(f"{self.state_path}: prunes another checkpoint; use another --work-dir")
        net, _ = checkpoint.from_dict(state["net"], str(self.state_path))
        self.net.load_state_dict(net.state_dict())
        self.gates.load_state_dict(state["gates"])
        for _, gate in self.gates:
            gate.m.requires_grad_(False)
        self.done, self.history, self.wall = state["done"], list(state["history"]), state["wall_time_s"]
        allocate = Stage("allocate", -1).label(self.names)
        allocated = next((row["targets"] for row in self.history if row["label"] == allocate), None)
        if allocated is not None:  # the allocate stage ran: its counts replace the uniform split
            self.targets = {str(k): int(v) for k, v in allocated.items()}
        self.log(f"resuming after stage {self.done}/{len(self.stages)} ({self.state_path})")
        return True

    # ------------------------------------------------------------ stages
    def _record(self, label: str, t0: float, **extra: Any) -> None:
        kept = self.gates.kept()
        acc = accuracy(self.net, self.monitor)
        self.wall += time.time() - t0
        row = {
            "stage": self.done + 1,
            "label": label,
            "accuracy": acc,
            "n": len(self.monitor),
            "pfr": pfr.pfr(self.original, kept),
            "kept": kept,
            "wall_time_s": round(self.wall, 1),
            **extra,
        }
        self.history.append(row)
        self.log(
            f"[{self.done + 1}/{len(self.stages)}] {label}: acc({len(self.monitor)}) {acc:.4f} "
            f"PFR {row['pfr']:.4f} [{self.wall:.0f}s]"
        )

    def _train(
        self,
        params: list[torch.nn.Parameter],
        lr: float,
        epochs: int,
        stage_no: int,
        loss_fn: Callable[..., torch.Tensor],
        desc: str,
    ) -> float:
        split = _random_subset(self.train_split, self.cfg.stage_samples, self.cfg.seed * 7919 + stage_no)
        tcfg = TrainConfig(
            arch=self.net.arch,
            epochs=epochs,
            batch_size=self.cfg.batch_size,
            lr=lr,
            seed=self.cfg.seed * 1009 + stage_no,
            augment=self.cfg.augment,
        )
        opt = torch.optim.Adam(params, lr=lr)
        loss = float("nan")
        for epoch in range(epochs):
            loss = train_epoch(self.net, opt, split, tcfg, epoch, torch.device("cpu"), loss_fn, desc=desc)
        return loss

    def _train_gates(self, i: int, budget: int, stage_no: int) -> float:
        """Train only layer i's gates (``budget`` of them open), the main network frozen."""
        layer, gate = self.gates.at(i)
        _set_trainable(self.net, self.gates, None)
        gate.reset(
            self.cfg.gate_init, self.cfg.gate_noise, torch.Generator().manual_seed(self.cfg.seed * 15485863 + stage_no)
        )
        gate.learn(budget=budget)
        base = distillation_loss(self.teacher, self.cfg)

        def loss_fn(logits: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
            return base(logits, labels, inputs) + self.cfg.sparsity * gate.values().sum()

        # The main network is frozen: eval mode (BatchNorm running statistics, no dropout) on
        # every forward, although train_epoch switches to training mode.
        hook = self.net.register_forward_pre_hook(lambda module, _inputs: (module.eval(), None)[1])
        try:
            return self._train(
                [gate.m], self.cfg.lr_sub, self.cfg.sub_epochs, stage_no, loss_fn, f"subsidiary {layer.name}"
            )
        finally:
            hook.remove()

    def _select_learned(self, i: int, stage_no: int) -> dict[str, Any]:
        """Subsidiary step: train only layer i's gates, then keep the top filters by m."""
        layer, gate = self.gates.at(i)
        if self.targets[layer.name] == self.original[layer.name]:  # nothing to prune here
            gate.fix(torch.ones(self.original[layer.name], dtype=torch.bool))
            return {}
        loss = self._train_gates(i, self.targets[layer.name], stage_no)
        gate.fix(baselines.top_k_mask(gate.m, self.targets[layer.name]))
        return {"loss": loss}

    @torch.no_grad()
    def _probe_loss(self, probe: data.Split, teacher_logits: list[torch.Tensor]) -> float:
        self.net.eval()
        total = 0.0
        for (x, y), t in zip(data.batches(probe, 500, shuffle=False), teacher_logits, strict=True):
            total += float(objective(self.net(x), y, t, self.cfg)) * len(y)
        return total / len(probe)

    def _allocate(self, stage_no: int) -> dict[str, Any]:
        """Learned allocation (:mod:`prune.allocation`): rank each layer's filters by its trained
        gates, measure the loss of keeping the top k, and share the kept total by those curves
        (``fit``: choose the counts within the budget by them)."""
        G = self.cfg.granularity
        fit = self._fit_model() if self.cfg.allocation == "fit" else None  # an unreachable budget: refused now
        probe = _random_subset(self.train_split, PROBE_SAMPLES, self.cfg.seed * 7919 + 104723)
        with torch.no_grad():
            self.teacher.eval()
            teacher_logits = [self.teacher(x) for x, _ in data.batches(probe, 500, shuffle=False)]
        curves: dict[str, dict[int, float]] = {}
        t0 = time.time()
        for i, (layer, gate) in enumerate(self.gates):
            n = self.original[layer.name]
            counts = allocation.probe_counts(n, G)
            if len(counts) > 1:  # gate budget: the uniform count, or with "fit" the middle of the grid
                budget = counts[len(counts) // 2] if fit else min(self.targets[layer.name], counts[-2])
                self._train_gates(i, budget, stage_no * 1000 + i)
            ranking = gate.m.detach().clone()
            curves[layer.name] = {}
            for k in counts:
                gate.fix(baselines.top_k_mask(ranking, k))
                curves[layer.name][k] = self._probe_loss(probe, teacher_logits)
            gate.reset(self.cfg.gate_init)
            c = curves[layer.name]
            self.log(
                f"  allocation probe {i + 1}/{len(self.names)} {layer.name}: loss {c[counts[-1]]:.4f} with "
                f"{counts[-1]} kept, {c[counts[0]]:.4f} with {counts[0]} ({len(counts)} counts) "
                f"[{time.time() - t0:.0f}s]"
            )
        if fit is not None:
            return self._allocate_fit(curves, *fit)
        uniform = dict(self.targets)
        costs = allocation.unit_costs(self.net, self.gates.layers)
        limit = allocation.total_macs(costs, uniform)
        total = sum(uniform.values())
        if self.cfg.allocation == "learned":
            learned: dict[str, int] | None = allocation.allocate(curves, self.original, total, G)
        else:
            learned = allocation.allocate_within(curves, self.original, total, G, costs, limit)
        if learned is None:
            self.log("allocation: no split of the kept total needs no more MACs than the uniform one; keeping it")
        self.targets = learned or uniform
        self.log(
            "allocation (kept per layer): "
            + ", ".join(f"{name} {self.targets[name]} (uniform {uniform[name]})" for name in self.names)
        )
        return {
            "targets": dict(self.targets),
            "uniform_targets": uniform,
            "macs": allocation.total_macs(costs, self.targets),
            "uniform_macs": limit,
            "curves": {name: {str(k): round(v, 5) for k, v in c.items()} for name, c in curves.items()},
        }

    @property
    def _width_index(self) -> dict[str, int]:
        return {layer.name: layer.width_index for layer in self.gates.layers}

    def _fit_model(self) -> tuple[Any, dict[str, float], dict[str, Any]]:
        """Allocation "fit", before the probe: FINN's estimate reports of the source network, and
        the cost model with every layer shape of the search probed and the budget's limits, checked
        to be reachable (:func:`prune.allocation.fit_cost_model`)."""
        from build_flows.cost import finn_estimates

        cfg = self.cfg
        board, fps = cfg.fit_target()
        unpruned = finn_estimates(self.teacher, board, fps, cfg.clock_ns)
        cm, limits = allocation.fit_cost_model(
            self.net.arch,
            self.net.widths,
            self.names,
            self._width_index,
            cfg.granularity,
            board,
            fps,
            cfg.clock_ns,
            cfg.fit_budget,
            unpruned["estimate_layer_resources"]["total"],
            self.cost_cache,
            self.log,
        )
        return cm, limits, unpruned

    def _allocate_fit(
        self, curves: dict[str, dict[int, float]], cm: Any, limits: dict[str, float], unpruned: dict[str, Any]
    ) -> dict[str, Any]:
        """Allocation "fit": the counts of least predicted loss within the budget (exact search over
        the probed grid, :func:`prune.allocation.fit_allocation`), recorded with FINN's predicted
        figures, the unpruned network's (``unpruned``: its FINN reports) and, for comparison, the
        uniform split at the same PFR."""
        res = allocation.fit_allocation(curves, self.net.widths, self._width_index, self.cfg.granularity, cm, limits)
        self.targets = dict(res.kept)
        uniform = pfr.kept_counts(self.original, pfr.pfr(self.original, res.kept), self.cfg.granularity)
        costs = allocation.unit_costs(self.net, self.gates.layers)
        pred, full = res.predicted, unpruned["estimate_layer_resources"]["total"]
        self.log(
            f"fit {self.cfg.fit_board} at {self.cfg.fit_fps:g} FPS: kept "
            + ", ".join(f"{k} {v}" for k, v in res.kept.items())
            + f"; FINN predicts LUT {pred.totals['LUT']:,.0f}-"
            f"{res.upper['LUT']:,.0f} <= {limits['LUT']:,.0f}, BRAM18 {pred.totals['BRAM_18K']:,.0f}-"
            f"{res.upper['BRAM_18K']:,.0f} <= {limits['BRAM_18K']:,.0f} (unpruned {full['LUT']:,.0f} / "
            f"{full['BRAM_18K']:,.0f})"
        )
        return {
            "targets": dict(res.kept),
            "uniform_targets": uniform,
            "macs": allocation.total_macs(costs, res.kept),
            "uniform_macs": allocation.total_macs(costs, uniform),
            "curves": {name: {str(k): round(v, 5) for k, v in c.items()} for name, c in curves.items()},
            "fit": {
                "board": self.cfg.fit_board,
                "target_fps": self.cfg.fit_fps,
                "clock_ns": self.cfg.clock_ns,
                "budget": self.cfg.fit_budget,
                "limits": limits,
                "predicted_loss": res.loss,
                "widths": res.widths,
                "candidates": res.candidates,
                "cost_probes": res.probes,
                "predicted": pred.totals,
                "predicted_upper": res.upper,
                "predicted_fps": pred.estimated_fps,
                "predicted_layers": {r: pred.layer_totals(r) for r in ("LUT", "BRAM_18K")},
                "unpruned": {k: float(v) for k, v in full.items()},
                "unpruned_fps": unpruned["estimate_network_performance"]["estimated_throughput_fps"],
            },
        }

    def _select_rule(self, layer_ids: list[int], stage_no: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(self.cfg.seed * 104729 + stage_no)
        for i in layer_ids:
            layer, gate = self.gates.at(i)
            n = self.original[layer.name]
            scores = (
                baselines.random_scores(n, gen)
                if self.cfg.method == "random"
                else baselines.l1_scores(unit_at(self.net, layer.unit))
            )
            gate.fix(baselines.top_k_mask(scores, self.targets[layer.name]))
        return {}

    def run_stage(self, stage: Stage) -> None:
        t0 = time.time()
        stage_no = self.done + 1
        label = stage.label(self.names)
        if stage.kind == "allocate":
            extra = self._allocate(stage_no)
        elif stage.kind == "select":
            if self.cfg.method == "subsidiary":
                extra = self._select_learned(stage.layer, stage_no)
            else:
                ids = list(range(len(self.names))) if stage.layer < 0 else [stage.layer]
                extra = self._select_rule(ids, stage_no)
        else:
            params = _set_trainable(self.net, self.gates, self.gates.layers[stage.layer].unit)
            extra = {
                "loss": self._train(
                    params,
                    self.cfg.lr_main,
                    self.cfg.main_epochs,
                    stage_no,
                    distillation_loss(self.teacher, self.cfg),
                    f"retrain {label}",
                )
            }
            _set_trainable(self.net, self.gates, None)
        self._record(label, t0, **extra)
        self.done += 1
        self.save_state()

    def run(self, max_stages: int | None = None) -> bool:
        """Run the remaining stages (at most ``max_stages``); True when all are done."""
        if self.done == 0 and not self.history:
            t0 = time.time()
            self.history.append(
                {
                    "stage": 0,
                    "label": "unpruned",
                    "accuracy": accuracy(self.net, self.monitor),
                    "n": len(self.monitor),
                    "pfr": 0.0,
                    "kept": dict(self.original),
                    "wall_time_s": 0.0,
                }
            )
            self.wall += time.time() - t0
        ran = 0
        while self.done < len(self.stages) and (max_stages is None or ran < max_stages):
            self.run_stage(self.stages[self.done])
            ran += 1
        return self.done == len(self.stages)


def _same_weights(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["arch"] != b["arch"] or list(a["widths"]) != list(b["widths"]):
        return False
    return all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
