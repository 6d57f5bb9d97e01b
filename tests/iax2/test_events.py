"""The endpoint's events (``gateway.iax2.events``): what the application is handed cannot be
changed under the endpoint, and every kind is exported."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from iaxgw.gateway.iax2 import events as ev

KINDS = [cls for _name, cls in inspect.getmembers(ev, inspect.isclass)
         if issubclass(cls, ev.Event) and cls.__module__ == ev.__name__]


def test_every_event_kind_is_exported() -> None:
    assert len(KINDS) >= 12
    assert sorted(cls.__name__ for cls in KINDS) == sorted(ev.__all__)


@pytest.mark.parametrize("cls", KINDS, ids=lambda c: c.__name__)
def test_events_are_frozen_and_slotted(cls: type[ev.Event]) -> None:
    """An event is a value: frozen (a handler cannot rewrite what another sees) and slotted (no
    per-event dict: a load test hands out one per call per state change)."""
    params = dataclasses.fields(cls)
    values = {f.name: _sample(f.type) for f in params}
    event = cls(**values)
    assert not hasattr(event, "__dict__")
    for f in params:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, f.name, values[f.name])
    assert event == cls(**values) and hash(event) == hash(cls(**values))


def _sample(annotation: object) -> object:
    text = str(annotation)
    if "Addr" in text or "tuple" in text:
        return ("127.0.0.1", 4569)
    if text.startswith("int") or text == "int":
        return 1
    if "float" in text:
        return 1.0
    if "bool" in text:
        return True
    if "bytes" in text:
        return b"\x00"
    return "x"
