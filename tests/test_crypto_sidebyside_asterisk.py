"""Encryption on one side only, side by side (``iaxgw.sim.lab.sidebyside``): the lab's Asterisk 22
office-a calls office-b, which is first the lab's Asterisk, then ``iaxgw serve`` with the same
rendered iax.conf; the outcomes must match.

* office-a forces encryption, office-b has none: office-b's AUTHREQ asks for no encryption and
  office-a gives up on the call;
* office-b forces encryption, office-a has none: REJECT 50 "No authority found" after the
  AUTHREP;
* office-a offers encryption (not forced), office-b has none: the calls go in the clear, with
  audio.
"""

from __future__ import annotations

from typing import Any

import pytest

from iaxgw.sim.lab.sidebyside import Scenario, run_side_by_side

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(420)]

FORCED = ("encryption = aes128", "forceencryption = yes")


@pytest.mark.parametrize(("a", "b", "answered"), [
    pytest.param(FORCED, (), 0, id="caller-forces"),
    pytest.param((), FORCED, 0, id="callee-forces"),
    pytest.param(("encryption = aes128",), (), 2, id="caller-offers"),
], )
def test_one_sided_encryption_as_asterisk(lab: Any, tmp_path: Any, a: tuple[str, ...],
                                          b: tuple[str, ...], answered: int) -> None:
    sc = Scenario(f"encryption a={a} b={b}", calls=2, hold_s=1.0 if answered else 0.0,
                  settle_s=3.0, a={"extra_general": a}, b={"extra_general": b})
    c = run_side_by_side(lab, sc, tmp_path)
    print(c.text())
    assert c.asterisk.causes == c.iaxgw.causes, c.diffs
    assert c.asterisk.answered == c.iaxgw.answered == answered, c.diffs
    assert c.asterisk.a_up == c.iaxgw.a_up, c.diffs
    if answered:
        assert c.asterisk.audio_ok() == c.iaxgw.audio_ok() == answered, c.diffs
