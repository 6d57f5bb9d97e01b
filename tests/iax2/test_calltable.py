"""The endpoint's call table on its own: lookups by our call number and by the peer's, binding
and rebinding, removal holding the number."""

from __future__ import annotations

import random

from iaxgw.gateway.iax2.calls import Call, CallKind, CallNumbers, CallState
from iaxgw.gateway.iax2.calltable import CallTable

A = ("127.0.0.10", 4569)
B = ("127.0.0.11", 4569)


def table_with(*addrs: tuple[str, int]) -> tuple[CallTable, list[Call]]:
    table = CallTable(CallNumbers(random.Random(1)))
    table.numbers.start(0.0)
    calls = []
    for addr in addrs:
        callno = table.numbers.allocate(addr[0], 0.0)
        assert callno is not None
        call = Call(callno, CallKind.CALL_IN, CallState.UP, addr, 0.0)
        table.add(call)
        calls.append(call)
    return table, calls


def test_a_call_is_found_by_our_number_and_once_bound_by_the_peers() -> None:
    table, (c1, c2) = table_with(A, B)
    assert len(table) == 2 and table.by_callno[c1.callno] is c1
    assert not table.by_remote and not table.by_addr        # peer numbers not known yet
    table.bind_remote(c1, 0)
    assert not table.by_remote                              # 0 is "not known": nothing bound
    table.bind_remote(c1, 700)
    table.bind_remote(c2, 700)                              # the same number from another source
    assert table.by_remote[(A, 700)] is c1 and table.by_remote[(B, 700)] is c2
    assert table.by_addr == {A: {700: c1}, B: {700: c2}}
    assert c1.peer_callno == 700


def test_rebinding_moves_the_call_and_leaves_no_stale_key() -> None:
    table, (c1,) = table_with(A)
    table.bind_remote(c1, 700)
    table.bind_remote(c1, 701)
    assert (A, 700) not in table.by_remote and table.by_remote[(A, 701)] is c1
    assert table.by_addr == {A: {701: c1}}


def test_unbinding_another_calls_key_leaves_it_alone() -> None:
    table, (c1, c2) = table_with(A, A)
    table.bind_remote(c1, 700)
    c2.peer_callno = 700                     # c2 claims the same key without being bound
    table.unbind_remote(c2)
    assert table.by_remote[(A, 700)] is c1 and table.by_addr[A][700] is c1


def test_removal_forgets_the_call_holds_its_number_and_happens_once() -> None:
    table, (c1, c2) = table_with(A, A)
    table.bind_remote(c1, 700)
    table.bind_remote(c2, 701)
    in_use = table.numbers.in_use
    assert table.remove(c1, 5.0)
    assert c1.callno not in table.by_callno and (A, 700) not in table.by_remote
    assert table.by_addr == {A: {701: c2}}
    assert not table.numbers.is_free(c1.callno)              # held before reuse
    assert table.numbers.in_use == in_use - 1
    assert not table.remove(c1, 6.0)                         # already gone: nothing happens
    assert table.remove(c2, 6.0) and not table.by_addr and len(table) == 0
