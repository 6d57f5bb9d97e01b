"""Call numbers on their own: the two pools, the 60 s hold, the per-source and token-less
budgets, and the quarantine that forged frames cannot grow past its bounds."""

from __future__ import annotations

import random

from iaxgw.gateway.iax2.calls import (
    NORMAL_POOL,
    QUARANTINE_POOL_SHARE,
    TRUNK_POOL,
    CallNumbers,
)

IP = "127.0.0.10"


def test_numbers_come_from_the_pool_of_their_kind() -> None:
    nums = CallNumbers(random.Random(3))
    normal = {nums.allocate(IP, 0.0) for _ in range(50)}
    trunk = {nums.allocate(IP, 0.0, trunk=True) for _ in range(50)}
    assert len(normal) == len(trunk) == 50
    assert all(n is not None and NORMAL_POOL[0] <= n <= NORMAL_POOL[1] for n in normal)
    assert all(n is not None and TRUNK_POOL[0] <= n <= TRUNK_POOL[1] for n in trunk)
    assert nums.in_use == 100 and nums.count(IP, 0.0) == 100


def test_a_released_number_is_held_and_counted_until_the_hold_ends() -> None:
    nums = CallNumbers(random.Random(3), limit=2, hold=60.0)
    a = nums.allocate(IP, 0.0)
    b = nums.allocate(IP, 0.0)
    assert a is not None and b is not None
    assert nums.allocate(IP, 0.0) is None
    assert nums.refusal(IP) == "maxcallnumbers (2) reached for 127.0.0.10"
    assert nums.allocate("127.0.0.11", 0.0) is not None          # the limit is per source
    nums.release(a, IP, 10.0)
    assert not nums.is_free(a) and nums.count(IP, 69.9) == 2      # held, still counted
    assert nums.allocate(IP, 69.9) is None
    assert nums.count(IP, 70.0) == 1 and nums.is_free(a)         # the hold is over
    assert nums.allocate(IP, 70.0) is not None
    nums.release(a, IP, 80.0)
    nums.release(a, IP, 80.0)                                   # twice: the second is ignored
    assert nums.count(IP, 80.0) == 2


def test_token_less_calls_share_one_budget() -> None:
    nums = CallNumbers(random.Random(3), nonval_limit=3)
    got = [nums.allocate(f"10.0.0.{k}", 0.0, validated=False) for k in range(3)]
    assert None not in got and nums.nonvalidated(0.0) == 3
    assert nums.allocate("10.0.0.9", 0.0, validated=False) is None
    assert "maxcallnumbers_nonvalidated (3)" in nums.refusal("10.0.0.9", validated=False)
    assert nums.allocate("10.0.0.9", 0.0) is not None             # a validated call still can
    first = got[0]
    assert first is not None
    nums.release(first, "10.0.0.0", 1.0)
    assert nums.nonvalidated(60.9) == 3 and nums.nonvalidated(61.0) == 2


def test_quarantine_holds_only_what_the_source_held_and_never_most_of_a_pool() -> None:
    nums = CallNumbers(random.Random(3), limit=100_000, hold=60.0)
    nums.start(0.0)
    n = nums.allocate(IP, 1.0)
    assert n is not None
    nums.release(n, IP, 2.0)
    assert nums.quarantine(n, IP, 100.0)                       # its last call was with IP
    assert not nums.quarantine(n, IP, 100.0)                   # already held
    other = next(c for c in range(NORMAL_POOL[0], NORMAL_POOL[1]) if nums.is_free(c))
    assert not nums.quarantine(other, IP, 100.0)               # never ours with IP: not held
    # within the first hold after a start any free number may be held, but at most a share
    fresh = CallNumbers(random.Random(3), limit=100_000, hold=60.0)
    fresh.start(0.0)
    held = sum(fresh.quarantine(c, IP, 1.0) for c in range(NORMAL_POOL[0], NORMAL_POOL[1] + 1))
    assert held == (NORMAL_POOL[1] - NORMAL_POOL[0] + 1) // QUARANTINE_POOL_SHARE
    assert fresh.allocate(IP, 1.0) is not None                 # the rest stays allocatable
    assert fresh.count(IP, 1.0) == 1
