"""A throttled source (serve's opt-in ``authfaillimit``) is told so: the REJECT's cause text says
it, and the load tester's note says "throttled" instead of blaming the username/secret."""

from __future__ import annotations

from iaxgw.gateway.conf.model import IaxConfig
from iaxgw.gateway.iax2.protocol import THROTTLED_TEXT
from iaxgw.sim.load.loadtest import Target, diagnose
from iaxgw.sim.load.metrics import cause_key

TARGET = Target(IaxConfig(), "office-b", ("127.0.0.20", 4569), ("127.0.0.10", 4569), "office-a")


def test_throttled_reject_note_says_throttled() -> None:
    notes = diagnose({"causes": {cause_key("REJECT", THROTTLED_TEXT): 4}, "attempted": 10},
                     TARGET)
    assert len(notes) == 1
    assert "throttles this address" in notes[0] and "authfaillimit" in notes[0]
    assert "check the username" not in notes[0]


def test_plain_auth_reject_still_points_at_the_secret() -> None:
    notes = diagnose({"causes": {cause_key("REJECT", "No authority found"): 2}, "attempted": 2},
                     TARGET)
    assert len(notes) == 1 and "check the username/secret" in notes[0]
