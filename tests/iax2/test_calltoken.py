"""Call tokens and the MD5 auth result on their own."""

from __future__ import annotations

import hashlib

import pytest

from iaxgw.gateway.iax2.calltoken import KEY_BYTES, CallTokens, md5_result

ADDR = ("127.0.0.10", 4569)


def test_a_token_checks_for_its_source_within_its_lifetime_only() -> None:
    tokens = CallTokens(bytes(range(KEY_BYTES)), expiration=10)
    tok = tokens.issue(ADDR, 1_700_000_000.7)
    assert tok.startswith(b"1700000000?") and len(tok) == 11 + 40
    assert tokens.check(tok, ADDR, 1_700_000_000.0) is None
    assert tokens.check(tok, ADDR, 1_700_000_009.9) is None
    assert "expired" in (tokens.check(tok, ADDR, 1_700_000_010.0) or "")
    assert "expired" in (tokens.check(tok, ADDR, 1_699_999_999.0) or "")    # from the future
    assert "mismatch" in (tokens.check(tok, ("127.0.0.10", 4570), 1_700_000_001) or "")
    other = CallTokens(bytes(KEY_BYTES), expiration=10)
    assert "mismatch" in (other.check(tok, ADDR, 1_700_000_001) or "")     # another key


@pytest.mark.parametrize("bad", [b"", b"\xff\xfe", b"1700000000", b"abc?" + b"0" * 40,
                                 b"1700000000?" + b"0" * 39, b"-5?" + b"0" * 40])
def test_malformed_tokens_are_refused_with_a_reason(bad: bytes) -> None:
    assert CallTokens(bytes(KEY_BYTES)).check(bad, ADDR, 1_700_000_000) == "malformed token"


def test_the_key_is_random_and_long_enough() -> None:
    assert CallTokens().key != CallTokens().key and len(CallTokens().key) == KEY_BYTES
    with pytest.raises(ValueError, match="128 bits"):
        CallTokens(b"short")


def test_md5_result_is_the_hex_md5_of_challenge_then_secret() -> None:
    assert md5_result("214748364", "s3cret") == hashlib.md5(b"214748364s3cret").hexdigest()
