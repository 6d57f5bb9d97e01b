"""Shared pytest configuration for iaxgw.

Asterisk lab fixtures (tests marked ``asterisk``): a real Asterisk 22 from the lab chroot
(``iaxgw lab provision``).  Without root or without a provisioned lab those tests skip with the
reason; with ``IAXGW_REQUIRE_ASTERISK=1`` (scripts/test.sh as root) the skip becomes a failure.

- ``lab``: the provisioned ``Lab`` (session); holds an inter-process lock so two test sessions on
  one machine do not fight over 127.0.0.10/20:4569.
- ``asterisk_factory``: ``start(name, config=None, **overrides)`` starts an instance for the
  module and stops it at the module's end.
- ``office_a``: office-a alone (127.0.0.20 left free for iaxgw); ``office_pair``: office-a and
  office-b.  Both module-scoped; pass config overrides with indirect parametrization:
  ``@pytest.mark.parametrize("office_pair", [{"trunk": False}], indirect=True)``.

Every instance is stopped by its fixture's finalizer, and a session-level sweep stops whatever
this process started and is still running, also when a test fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

REQUIRE_ENV = "IAXGW_REQUIRE_ASTERISK"
LOCK_WAIT_S = 300.0


def asterisk_required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def skip_or_fail(reason: str) -> None:
    """Skip with ``reason``; fail instead when the environment requires the lab."""
    if asterisk_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("asterisk") is None:
        return
    from iaxgw.sim.lab.lab import Lab

    reason = Lab().unavailable_reason()
    if reason is not None:
        skip_or_fail(reason)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Sweep: stop every Asterisk this test process started and that is still running."""
    from iaxgw.sim.lab.lab import stop_all_started

    stop_all_started()


@pytest.fixture(scope="session")
def lab() -> Iterator[Any]:
    """The provisioned lab; skips (or fails, see module doc) when it is not usable."""
    from iaxgw.sim.lab.lab import Lab, LabError, stop_all_started

    lab_ = Lab()
    reason = lab_.unavailable_reason()
    if reason is not None:
        skip_or_fail(reason)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(lab_.lock(wait=LOCK_WAIT_S))
        except LabError as exc:
            pytest.fail(f"another test session holds the Asterisk lab: {exc}", pytrace=False)
        try:
            yield lab_
        finally:
            stop_all_started()


StartFn = Callable[..., Any]


@pytest.fixture(scope="module")
def asterisk_factory(lab: Any) -> Iterator[StartFn]:
    """``start(name="office-a", config=None, **overrides) -> AsteriskInstance``, module-scoped."""
    from iaxgw.sim.lab.labconfig import seed_site

    started: list[Any] = []

    def start(name: str = "office-a", config: Any = None, **overrides: Any) -> Any:
        cfg = config if config is not None else seed_site(name)
        if overrides:
            cfg = cfg.with_(**overrides)
        inst = lab.instance(name, cfg)
        started.append(inst)
        return inst.start()

    try:
        yield start
    finally:
        for inst in reversed(started):
            inst.stop()


def _overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    param = getattr(request, "param", None)
    return dict(param) if param else {}


@pytest.fixture(scope="module")
def office_a(asterisk_factory: StartFn, request: pytest.FixtureRequest) -> Any:
    """office-a (127.0.0.10:4569) alone, seed config plus indirect-param overrides."""
    return asterisk_factory("office-a", **_overrides(request))


@pytest.fixture(scope="module")
def office_pair(asterisk_factory: StartFn, request: pytest.FixtureRequest) -> tuple[Any, Any]:
    """office-a and office-b trunked as in the seed, plus indirect-param overrides.

    A param may be ``{"a": {...}, "b": {...}}`` for per-side overrides, or one dict for both.
    """
    params = _overrides(request)
    if set(params) <= {"a", "b"} and params:
        over_a, over_b = dict(params.get("a", {})), dict(params.get("b", {}))
    else:
        over_a, over_b = params, params
    a = asterisk_factory("office-a", **over_a)
    b = asterisk_factory("office-b", **over_b)
    return a, b
