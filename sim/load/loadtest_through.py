"""A load test run through a running ``iaxgw serve``: ``iaxgw loadtest --through PATH``.

One emulated site answers and places calls at once, on one endpoint and one address: the
serve (office-b, say) goes on answering what office-a sends it while a
:class:`~iaxgw.sim.load.loadtest.LoadRunner` inside the serve process places the load test's calls
from the same socket, to the same peer, in the same trunk.  The serve's control socket carries
it: ``loadtest_start`` (the options), ``loadtest_status`` (the live figures; at the end the
summary and exit code), and while it runs ``rate``/``pause``/``resume``/``stop`` drive it as
they drive ``loadtest --control``.  The serve writes the report files (the same ones); the
``iaxgw loadtest --through`` client shows the live screen and prints the same summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iaxgw.gateway.serve.control import CommandRefused, ControlError, query, to_jsonable
from iaxgw.sim.load.loadtest import (
    EXIT_SIGINT,
    LoadRunner,
    LoadtestError,
    LoadtestResult,
    Target,
    check_report_dir,
    finish_output,
    make_screen,
)
from iaxgw.sim.load.loadtest_control import MIN_RATE, HotKeys, drive
from iaxgw.sim.load.loadtest_plan import LoadtestOptions, PlanError
from iaxgw.sim.report.report import Snapshot, write_report

log = logging.getLogger("iaxgw.loadtest")

#: the options a client may send (the others are the serve's own: its site, peer, address)
THROUGH_OPTIONS = ("calls", "rate", "total", "duration", "codec", "media", "extens",
                   "report_dir", "max_failed", "setup_timeout", "max_pending",
                   "allow_underrun", "seed")
POLL_S = 1.0


class Attachment:
    """A serve's endpoint lent to a load runner: the app routes the runner's calls' events
    and media to it, and the socket's datagrams are counted for it too."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.server = app.datagram_server
        self._saved: tuple[Any, Any] | None = None

    def route(self, runner: LoadRunner) -> None:
        srv = self.server
        one, many = srv.on_datagram, srv.on_datagrams
        self._saved = (one, many)

        def on_one(direction: Any, data: bytes, addr: Any, now: float) -> None:
            if one is not None:
                one(direction, data, addr, now)
            runner._on_datagram(direction, data, addr, now)

        def on_many(direction: Any, items: list[Any], now: float) -> None:
            if many is not None:
                many(direction, items, now)
            elif one is not None:
                for item in items:
                    one(direction, item[0], item[1], now)
            runner._on_datagrams(direction, items, now)

        srv.on_datagram, srv.on_datagrams = on_one, on_many
        self.app.guest = runner

    def unroute(self, runner: LoadRunner) -> None:
        if self.app.guest is runner:
            self.app.guest = None
        if self._saved is not None:
            self.server.on_datagram, self.server.on_datagrams = self._saved
            self._saved = None


class _LastSnapshot:
    """The runner's screen inside a serve: keeps the latest figures for the client."""

    def __init__(self) -> None:
        self.last: Snapshot | None = None
        self.capped: str | None = None
        self.keys_help = False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def update(self, snap: Snapshot) -> None:
        self.last = snap


def options_from(request: Mapping[str, Any]) -> LoadtestOptions:
    """The client's options (:data:`THROUGH_OPTIONS` only), checked."""
    given = request.get("options")
    if not isinstance(given, Mapping):
        raise CommandRefused('loadtest_start needs "options"')
    opts = LoadtestOptions(quiet=True, live=False)
    for key, value in given.items():
        if key not in THROUGH_OPTIONS:
            raise CommandRefused(f"option {key!r} cannot be given to a load test run through "
                                 "a serve (the serve's own site, peer and address are used)")
        if value is None:
            continue
        if key == "duration":
            value = tuple(float(v) for v in value)
        elif key == "report_dir":
            value = Path(value)
        setattr(opts, key, value)
    return opts


class LoadtestHost:
    """Runs load tests (one at a time) inside a serve process, on its endpoint."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.runner: LoadRunner | None = None
        self.screen = _LastSnapshot()
        self.task: asyncio.Task[None] | None = None
        self.result: LoadtestResult | None = None
        self.error: str | None = None
        self.report_error: str | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def handle(self, cmd: str, request: Mapping[str, Any]) -> Any:
        """The serve's command hook: KeyError for what is not a load test's."""
        if cmd == "loadtest_start":
            return self.start(request)
        if cmd == "loadtest_status":
            return self.status()
        if cmd in ("rate", "pause", "resume", "stop") and self.running:
            assert self.runner is not None
            return drive(self.runner.control, cmd, request)
        raise KeyError(cmd)

    def _target(self) -> Target:
        app = self.app
        entry = app.config.peer(app.peer)
        if entry is None or not entry.host or entry.dynamic:
            raise CommandRefused(f"peer {app.peer!r} has no fixed host to call")
        return Target(config=app.config, peer=app.peer, peer_addr=(entry.host, entry.port),
                      bind=app.local_addr, role=app.role_name)

    def start(self, request: Mapping[str, Any]) -> dict[str, Any]:
        if self.running:
            raise CommandRefused("a load test is already running through this serve")
        opts = options_from(request)
        opts.peer = self.app.peer
        try:
            opts.check()
        except PlanError as exc:
            raise CommandRefused(str(exc)) from None
        target = self._target()
        self.screen = _LastSnapshot()
        self.runner = LoadRunner(opts, target, screen=self.screen, attach=Attachment(self.app))
        self.result, self.error, self.report_error = None, None, None
        self.task = asyncio.get_running_loop().create_task(self._run(self.runner, opts),
                                                           name="loadtest-through")
        log.info("load test through this serve: %d calls at %g/s to %s", opts.calls, opts.cps,
                 target.peer)
        return {"started": True, "peer": target.peer, "local": list(target.bind),
                "warnings": list(opts.warnings)}

    async def _run(self, runner: LoadRunner, opts: LoadtestOptions) -> None:
        try:
            result = await runner.run()
        except (LoadtestError, PlanError) as exc:
            self.error = str(exc)
            return
        except Exception as exc:          # the serve goes on whatever the load test does
            log.exception("load test through the serve failed")
            self.error = f"{type(exc).__name__}: {exc}"
            return
        if opts.report_dir is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, _write, opts, result)
            except OSError as exc:
                self.report_error = f"cannot write report to {opts.report_dir}: {exc}"
        self.result = result

    def status(self) -> dict[str, Any]:
        if self.error is not None:
            return {"done": True, "error": self.error}
        if self.result is not None and not self.running:
            r = self.result
            return {"done": True, "summary": r.summary, "exit_code": r.exit_code,
                    "report_error": self.report_error,
                    "report_files": [str(p) for p in r.report_files]}
        if self.runner is None:
            raise CommandRefused("no load test has run through this serve")
        snap = self.screen.last
        return {"done": False, "snapshot": to_jsonable(snap) if snap is not None else None,
                "capped": self.runner.live_cap()}


def _write(opts: LoadtestOptions, result: LoadtestResult) -> None:
    assert opts.report_dir is not None
    files = write_report(opts.report_dir, result.summary, result.records, result.timeseries,
                         plots=True, call_ids=result.call_ids)
    result.report_files = list(files.files)


# --- the client: iaxgw loadtest --through PATH ---------------------------------------------


class RemoteControl:
    """A --through client's hot keys: each one a control command to the serve."""

    def __init__(self, path: str, rate: float) -> None:
        self.path = path
        self.rate = rate
        self.paused = False

    def _send(self, cmd: str, **args: Any) -> None:
        data = query(self.path, cmd, by="key", **args)
        if isinstance(data, dict) and "rate_cps" in data:
            self.rate, self.paused = float(data["rate_cps"]), bool(data["paused"])

    def step(self, delta: float, by: str = "key") -> float:
        self._send("rate", rate=max(MIN_RATE, self.rate + delta))
        return self.rate

    def scale(self, factor: float, by: str = "key") -> float:
        self._send("rate", rate=max(MIN_RATE, self.rate * factor))
        return self.rate

    def toggle_pause(self, by: str = "key") -> bool:
        self._send("resume" if self.paused else "pause")
        return self.paused

    def stop(self, by: str = "key") -> None:
        self._send("stop")


def _payload(opts: LoadtestOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in THROUGH_OPTIONS:
        value = getattr(opts, key)
        if key == "report_dir" and value is not None:
            value = str(Path(value).resolve())
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _snapshot(data: Mapping[str, Any]) -> Snapshot:
    names = {f.name for f in dataclasses.fields(Snapshot)}
    return Snapshot(**{k: v for k, v in data.items() if k in names})


def run_through(path: str, opts: LoadtestOptions) -> int:
    """Start the load test in the serve at ``path``, show it, print its summary; exit code."""
    check_report_dir(opts)
    try:
        started = query(path, "loadtest_start", options=_payload(opts))
    except ControlError as exc:
        raise LoadtestError(f"--through {path}: {exc}") from None
    for warning in started.get("warnings") or []:
        log.warning("%s", warning)
    screen = make_screen(opts)
    remote = RemoteControl(path, opts.cps)
    keys = HotKeys(remote)
    if opts.hot_keys and HotKeys.available():
        keys.start()
        if screen is not None:
            screen.keys_help = True
    interrupted = False
    status: dict[str, Any] = {}
    if screen is not None:
        screen.start()
    try:
        while True:
            try:
                status = query(path, "loadtest_status")
                if status.get("done"):
                    break
                snap = status.get("snapshot")
                if snap:
                    remote.rate = float(snap.get("rate_asked") or remote.rate)
                    remote.paused = bool(snap.get("paused"))
                if screen is not None and snap:
                    screen.capped = status.get("capped")
                    screen.update(_snapshot(snap))
                keys.wait(POLL_S)
            except KeyboardInterrupt:
                interrupted = True        # the serve stops it gracefully; we still report
                with contextlib.suppress(ControlError):
                    query(path, "stop")
    except ControlError as exc:
        raise LoadtestError(f"--through {path}: lost the serve: {exc}") from None
    finally:
        keys.close()
        if screen is not None:
            screen.stop()
    if status.get("error"):
        raise LoadtestError(f"the load test in the serve at {path} could not run: "
                            f"{status['error']}")
    if status.get("report_error"):
        log.error("%s", status["report_error"])
    result = LoadtestResult(summary=status["summary"], exit_code=int(status["exit_code"]))
    finish_output(dataclasses.replace(opts, report_dir=None), result)
    return EXIT_SIGINT if interrupted else result.exit_code
