"""Capacity search: raise the concurrency step by step until a stop rule trips.

``iaxgw loadtest --step N --step-time S --max-calls M --stop-when "EXPR"`` starts with N calls
and adds N every S seconds.  At the end of each step the step's figures are judged by the rule
(``setup_fail_pct > 1 or mos_p5 < 3.5``); the first step that trips it is ``failed_at``, the one
before it the capacity.  Pure bookkeeping on the once-a-second rows and samples a run makes (one
process's or the shards' merged ones): no clock, no I/O.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from iaxgw.sim.load.limits import step_cpu_bound

#: What a stop rule may name (each over the step: its attempts, the calls answered in it, and
#: the calls up at its end).
METRICS = {
    "mos_p5": "5th percentile of the MOS of the calls up at the end of the step",
    "mos_p50": "median MOS of the calls up at the end of the step",
    "loss_pct": "voice frames lost over the step, % of those expected",
    "jitter_p95_ms": "95th percentile of the jitter of the calls up at the end of the step",
    "setup_p95_ms": "95th percentile NEW -> ANSWER of the calls answered in the step",
    "setup_fail_pct": "attempts of the step that ended failed, % of its attempts",
    "calls_up": "answered calls up at the end of the step",
}
DEFAULT_STOP_WHEN = "setup_fail_pct > 1 or loss_pct > 1 or mos_p5 < 3.5"
#: A step counts as reached when this share of its calls was up at its end.
REACHED_SHARE = 0.98

_COMPARE: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne}


class RuleError(ValueError):
    """A ``--stop-when`` expression that is not a rule over the known metrics."""


class StopRule:
    """``--stop-when``: comparisons of :data:`METRICS` with numbers, joined by ``and`` /
    ``or`` (parentheses allowed).  A metric not measured in a step (None) makes its
    comparison false: a rule never trips on a figure that is not there."""

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        try:
            tree = ast.parse(self.text, mode="eval")
        except SyntaxError:
            raise RuleError(f"--stop-when {text!r}: not an expression like "
                            f"{DEFAULT_STOP_WHEN!r}") from None
        self._check(tree.body)
        self.tree = tree.body

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.BoolOp):
            for v in node.values:
                self._check(v)
        elif isinstance(node, ast.Compare):
            if not all(type(op) in _COMPARE for op in node.ops):
                raise RuleError(f"--stop-when {self.text!r}: compare with < <= > >= == !=")
            for v in (node.left, *node.comparators):
                self._operand(v)
        else:
            raise RuleError(f"--stop-when {self.text!r}: {ast.unparse(node)!r} is not a "
                            "comparison (e.g. mos_p5 < 3.5)")

    def _operand(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            if node.id not in METRICS:
                raise RuleError(f"--stop-when {self.text!r}: unknown metric {node.id!r}; "
                                f"known: {', '.join(METRICS)}")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            self._operand(node.operand)
        elif not (isinstance(node, ast.Constant) and isinstance(node.value, int | float)
                  and not isinstance(node.value, bool)):
            raise RuleError(f"--stop-when {self.text!r}: {ast.unparse(node)!r} is neither a "
                            "metric nor a number")

    def tripped(self, metrics: Mapping[str, float | None]) -> list[str]:
        """The comparisons that make the rule trip (each with its figures); empty when it does
        not trip."""
        ok, hits = self._eval(self.tree, metrics)
        return hits if ok else []

    def _eval(self, node: ast.AST, m: Mapping[str, float | None]) -> tuple[bool, list[str]]:
        if isinstance(node, ast.BoolOp):
            parts = [self._eval(v, m) for v in node.values]
            ok = (all(p[0] for p in parts) if isinstance(node.op, ast.And)
                  else any(p[0] for p in parts))
            return ok, [h for p in parts if p[0] for h in p[1]] if ok else []
        assert isinstance(node, ast.Compare)
        left = self._value(node.left, m)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self._value(right_node, m)
            if left is None or right is None or not _COMPARE[type(op)](left, right):
                return False, []
            left = right
        names = sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name)})
        figures = ", ".join(f"{n} = {_fmt(m.get(n))}" for n in names)
        return True, [f"{ast.unparse(node)} ({figures})"]

    def _value(self, node: ast.AST, m: Mapping[str, float | None]) -> float | None:
        if isinstance(node, ast.Name):
            v = m.get(node.id)
            return None if v is None or not math.isfinite(v) else float(v)
        if isinstance(node, ast.UnaryOp):
            v = self._value(node.operand, m)
            return None if v is None else -v
        assert isinstance(node, ast.Constant) and isinstance(node.value, int | float)
        return float(node.value)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


@dataclass(slots=True)
class StepFigures:
    """What one step gathered, second by second."""

    calls: int
    started_s: float
    attempts: int = 0
    failed: int = 0
    lost: int = 0
    expected: int = 0
    setups: list[float] = field(default_factory=list)
    last_mos: list[float] = field(default_factory=list)
    last_jitter: list[float] = field(default_factory=list)
    calls_up: int = 0
    seconds: int = 0
    cpu: list[float] = field(default_factory=list)    # the busiest generator process, by second

    def add(self, row: Mapping[str, Any], samples: Mapping[str, Any]) -> None:
        self.seconds += 1
        self.attempts += int(row.get("attempts") or 0)
        self.failed += int(row.get("failed") or 0)
        self.lost += int(samples.get("lost") or 0)
        self.expected += int(samples.get("expected") or 0)
        self.setups.extend(samples.get("setup_ms") or [])
        self.last_mos = list(samples.get("mos") or [])
        self.last_jitter = list(samples.get("jitter_ms") or [])
        self.calls_up = int(row.get("calls_up") or 0)
        cpu = samples.get("cpu_max_pct", samples.get("cpu_pct"))
        if cpu is not None:
            self.cpu.append(float(cpu))

    def metrics(self) -> dict[str, float | None]:
        from iaxgw.sim.report.report import percentile  # the report's rule; report is not light

        return {
            "mos_p5": percentile(self.last_mos, 5), "mos_p50": percentile(self.last_mos, 50),
            "loss_pct": 100.0 * self.lost / self.expected if self.expected else None,
            "jitter_p95_ms": percentile(self.last_jitter, 95),
            "setup_p95_ms": percentile(self.setups, 95),
            "setup_fail_pct": 100.0 * self.failed / self.attempts if self.attempts else 0.0,
            "calls_up": float(self.calls_up),
        }


@dataclass(slots=True)
class Action:
    """What the run does next: a new concurrency, or stop (the search is over)."""

    calls: int | None = None
    stop: bool = False


class CapacitySearch:
    """Feed it every second's row and samples (:meth:`second`); it answers with an
    :class:`Action` at each step's end.  ``result()`` is summary.json's ``capacity``."""

    def __init__(self, step: int, step_time: float, max_calls: int, rule: StopRule) -> None:
        self.step = step
        self.step_time = step_time
        self.max_calls = max_calls
        self.rule = rule
        self.current = StepFigures(calls=min(step, max_calls), started_s=0.0)
        self.steps: list[dict[str, Any]] = []
        self.capacity: int | None = None
        self.failed_at: int | None = None
        self.reason: str | None = None
        self.limit: str | None = None     # whose limit failed_at is: target or generator
        self.done = False

    @property
    def calls(self) -> int:
        """The concurrency asked for now."""
        return self.current.calls

    def second(self, row: Mapping[str, Any], samples: Mapping[str, Any]) -> Action | None:
        if self.done:
            return None
        cur = self.current
        cur.add(row, samples)
        t = float(row.get("time_s") or 0.0)
        if t - cur.started_s < self.step_time - 0.5:
            return None
        return self._judge(cur, t)

    def _judge(self, cur: StepFigures, t: float) -> Action:
        m = cur.metrics()
        hits = self.rule.tripped(m)
        reached = cur.calls_up >= math.floor(REACHED_SHARE * cur.calls)
        if not hits and not reached:
            hits = [f"only {cur.calls_up} of {cur.calls} calls up at the step's end"]
        cpu_bound = step_cpu_bound(cur.cpu)
        self.steps.append({"calls": cur.calls, "seconds": cur.seconds,
                           "attempts": cur.attempts, "failed": cur.failed,
                           **{k: _round(v) for k, v in m.items()},
                           "generator_cpu_max_pct": _round(max(cur.cpu, default=None)),
                           "generator_cpu_bound": cpu_bound,
                           "held": not hits, "tripped": hits})
        if hits:
            self.failed_at, self.reason, self.done = cur.calls, "; ".join(hits), True
            self.limit = "generator" if cpu_bound else "target"
            if cpu_bound:
                self.reason += ("; the load generator was CPU-bound in this step: the limit "
                                "may be the generator's, not the target's (add shards)")
            return Action(stop=True)
        self.capacity = cur.calls
        if cur.calls >= self.max_calls:
            self.reason, self.done = f"--max-calls {self.max_calls} reached and held", True
            return Action(stop=True)
        self.current = StepFigures(calls=min(cur.calls + self.step, self.max_calls),
                                   started_s=t)
        return Action(calls=self.current.calls)

    def result(self) -> dict[str, Any]:
        """summary.json's ``capacity``."""
        return {"calls": self.capacity, "failed_at": self.failed_at, "limited_by": self.limit,
                "reason": self.reason if self.done else "the run ended before a step tripped",
                "stop_when": self.rule.text, "step": self.step,
                "step_time_s": self.step_time, "max_calls": self.max_calls,
                "steps": self.steps}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def step_lines(capacity: Mapping[str, Any]) -> list[str]:
    """The per-step table of the printed summary."""
    head = (f"{'calls':>6} {'up':>6} {'att':>6} {'fail%':>6} {'setup95':>8} {'loss%':>6} "
            f"{'jit95':>6} {'mos5':>5}  verdict")
    out = [head]
    for s in capacity.get("steps") or []:
        verdict = "held" if s.get("held") else "TRIPPED: " + "; ".join(s.get("tripped") or [])
        out.append(f"{s['calls']:>6} {_cell(s.get('calls_up'), '.0f'):>6} "
                   f"{s.get('attempts'):>6} {_cell(s.get('setup_fail_pct'), '.1f'):>6} "
                   f"{_cell(s.get('setup_p95_ms'), '.0f'):>8} {_cell(s.get('loss_pct'), '.2f'):>6} "
                   f"{_cell(s.get('jitter_p95_ms'), '.1f'):>6} {_cell(s.get('mos_p5'), '.2f'):>5}"
                   f"  {verdict}")
    return out


def _cell(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else f"{v:{fmt}}"


def write_capacity_plot(path: Any, capacity: Mapping[str, Any]) -> None:
    """capacity.png: each step's calls up, setup-failure share and MOS p5."""
    import io

    from matplotlib.figure import Figure

    from iaxgw.gateway.safefs import write_file_atomic

    steps = capacity.get("steps") or []
    x = [s["calls"] for s in steps]
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax, bx = fig.subplots(2, 1, sharex=True)
    ax.plot(x, [s.get("calls_up") or 0 for s in steps], marker="o", label="calls up")
    ax.plot(x, x, linestyle=":", color="grey", label="asked")
    if capacity.get("calls") is not None:
        ax.axvline(capacity["calls"], color="tab:green", label="capacity")
    ax.set_ylabel("calls")
    ax.set_title(f"Capacity search: {capacity.get('calls')} calls held")
    ax.legend(loc="upper left")
    bx.plot(x, [s.get("setup_fail_pct") or 0.0 for s in steps], marker="o", color="tab:red",
            label="setup failures %")
    bx.set_ylabel("setup failures (%)")
    bx.set_xlabel("calls asked in the step")
    cx = bx.twinx()
    cx.plot(x, [math.nan if s.get("mos_p5") is None else s["mos_p5"] for s in steps],
            marker="s", color="tab:blue", label="MOS p5")
    cx.set_ylabel("MOS p5")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_file_atomic(path, buf.getvalue())
