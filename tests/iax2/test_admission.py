"""The endpoint's admission part on its own: call-token verdicts, unanswered AUTHREQs and the
failed-authentication window (it decides, sends nothing)."""

from __future__ import annotations

import ipaddress

from iaxgw.gateway.conf.model import AclRule, Entry, General
from iaxgw.gateway.iax2.admission import MAX_THROTTLED_SOURCES, Admission, TokenCheck

KEY = bytes(range(32))
ADDR = ("127.0.0.10", 4569)
NOW = 1.7e9


def admission(**general: object) -> Admission:
    return Admission(General(**general), KEY)  # type: ignore[arg-type]


def test_a_request_without_a_token_is_refused_unless_its_user_or_source_is_exempt() -> None:
    adm = admission()
    v = adm.token_verdict(None, False, ADDR, NOW, Entry("office-a"), "office-a")
    assert v.check is TokenCheck.MISSING and "missing" in v.reason
    no = Entry("office-a", requirecalltoken="no")
    assert adm.token_verdict(None, False, ADDR, NOW, no, "office-a").check is TokenCheck.PASS
    exempt = admission(calltokenoptional=[AclRule(True, ipaddress.ip_network("127.0.0.0/8"))])
    assert exempt.token_verdict(None, False, ADDR, NOW, None, "guest").check is TokenCheck.PASS
    other = ("10.1.2.3", 4569)
    assert exempt.token_verdict(None, False, other, NOW, None, "guest").check is TokenCheck.MISSING


def test_an_empty_token_gets_one_that_then_admits_that_source_only_until_it_expires() -> None:
    adm = admission(calltokenexpiration=10)
    v = adm.token_verdict(b"", True, ADDR, NOW, None, "office-a")
    assert v.check is TokenCheck.ISSUE and v.token
    assert adm.token_verdict(v.token, True, ADDR, NOW + 9, None, "x").check is TokenCheck.PASS
    late = adm.token_verdict(v.token, True, ADDR, NOW + 10, None, "x")
    assert late.check is TokenCheck.INVALID and "expired" in late.reason
    moved = adm.token_verdict(v.token, True, ("127.0.0.11", 4569), NOW, None, "x")
    assert moved.check is TokenCheck.INVALID and "mismatch" in moved.reason
    forged = adm.token_verdict(b"1700000000?" + b"0" * 40, True, ADDR, NOW, None, "x")
    assert forged.check is TokenCheck.INVALID
    assert adm.token_verdict(12345, True, ADDR, NOW, None, "x").check is TokenCheck.INVALID


def test_requirecalltoken_auto_demands_a_token_once_the_user_has_shown_one() -> None:
    adm = admission()
    auto = Entry("office-a", requirecalltoken="auto")
    assert adm.token_verdict(None, False, ADDR, NOW, auto, "office-a").check is TokenCheck.PASS
    tok = adm.token_verdict(b"", True, ADDR, NOW, auto, "office-a").token
    assert adm.token_verdict(tok, True, ADDR, NOW, auto, "office-a").check is TokenCheck.PASS
    assert adm.token_verdict(None, False, ADDR, NOW, auto, "office-a").check is TokenCheck.MISSING


def test_unanswered_authreqs_per_user_are_capped_and_released() -> None:
    adm = admission(maxauthreq=2)
    assert not adm.authreq_pending() and not adm.authreq_full("office-a")
    adm.authreq_sent("office-a")
    adm.authreq_sent("office-a")
    assert adm.authreq_full("office-a") and not adm.authreq_full("office-c")
    assert adm.authreq_pending()
    adm.authreq_done("office-a")
    assert not adm.authreq_full("office-a")
    adm.authreq_done("office-a")
    assert not adm.authreq_pending()


def test_failed_authentications_throttle_a_source_within_the_window_only() -> None:
    adm = admission(authfaillimit=3, authfailwindow=60)
    for k in range(2):
        adm.note_failure("127.0.0.77", 100.0 + k)
    assert adm.throttled("127.0.0.77", 102.0) == 0
    adm.note_failure("127.0.0.77", 102.0)
    assert adm.throttled("127.0.0.77", 103.0) == 3
    assert adm.throttled("127.0.0.78", 103.0) == 0           # per source
    assert adm.throttled("127.0.0.77", 161.0) == 0           # the first two left the window
    assert adm.throttled("127.0.0.77", 170.0) == 0 and "127.0.0.77" not in adm.authfails


def test_the_window_is_off_by_default_and_bounded_in_sources() -> None:
    off = admission()
    for _ in range(10):
        off.note_failure("127.0.0.77", 1.0)
    assert off.throttled("127.0.0.77", 1.0) == 0 and not off.authfails
    adm = admission(authfaillimit=1, authfailwindow=60)
    for k in range(MAX_THROTTLED_SOURCES + 10):
        adm.note_failure(f"10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}", 5.0)
    assert len(adm.authfails) == MAX_THROTTLED_SOURCES
    assert adm.throttled("10.0.0.0", 5.0) == 0                # the oldest were forgotten
    assert adm.throttled(f"10.0.{(MAX_THROTTLED_SOURCES + 9) >> 8 & 255}."
                         f"{(MAX_THROTTLED_SOURCES + 9) & 255}", 5.0) == 1
