"""Replay of the fuzz targets (``fuzz/targets.py``) without atheris: seeds plus a bounded set of
deterministic mutations, so every CI run checks the harness itself and the contracts it enforces
(success or FrameError, compiled == twin, round trips, an Endpoint that never raises)."""

from __future__ import annotations

import logging
import random
import sys
import zlib
from pathlib import Path

import pytest
from _vectors import all_vectors

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
import targets

SEEDS = list(all_vectors().values())


def mutations(seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        d = bytearray(rng.choice(SEEDS))
        for _ in range(rng.randint(0, 6)):
            op = rng.randrange(4)
            if op == 0 and d:
                d[rng.randrange(len(d))] = rng.randrange(256)
            elif op == 1:
                d.insert(rng.randint(0, len(d)), rng.randrange(256))
            elif op == 2 and d:
                del d[rng.randrange(len(d))]
            else:
                d = d[:rng.randint(0, len(d))]
        out.append(bytes(d))
    return out


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_target_replay(name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="iaxgw")
    fn = targets.TARGETS[name]
    for data in [*SEEDS, b"", b"\x00", bytes(4097), *mutations(zlib.crc32(name.encode()), 400)]:
        fn(data)


def test_the_runner_runs_every_target() -> None:
    """fuzz/run.py's list (kept apart so its argument parsing needs no iaxgw import) names
    exactly the targets of fuzz/targets.py."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "fuzz_run", Path(__file__).resolve().parents[1] / "fuzz" / "run.py")
    assert spec is not None and spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    assert sorted(run.TARGETS) == sorted(targets.TARGETS)


def test_compiled_twin_cross_check_is_active() -> None:
    from iaxgw._core import USING_EXTENSIONS

    if USING_EXTENSIONS:
        assert targets.compiled_available() and len(targets.FRAMES) == 2


def test_endpoint_target_reaches_an_answered_call() -> None:
    targets._EP_STATE["ep"] = None
    ep = targets._endpoint()
    peer = targets._Peer(0x321)
    targets._setup_call(ep, peer, targets.PEER, 1000.0, answer=True)
    assert [c.state for c in ep.channels()] == ["UP"]


@pytest.mark.parametrize("offer", [0x0001, 0x8001])
def test_encrypted_endpoint_target_reaches_an_encrypted_call(
        offer: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The encrypted target's setup gives an answered call whose frames both ways go
    encrypted, and the fuzzed inputs reach the decrypt path of live encrypted calls both
    ways: frames that decrypt and frames refused (cut, flipped, in the clear)."""
    import iaxgw.gateway.iax2.protocol as protocol

    targets._ENC_STATE["ep"] = None
    st = targets._encrypted_endpoint()
    ep = st["ep"]
    peer = targets._Peer(0x322)
    targets._setup_encrypted_call(ep, peer, targets.PEER, 1000.0, True, offer, st)
    assert [c.state for c in ep.channels()] == ["UP"]
    (callno,) = ep._crypt
    cc = ep._crypt[callno]
    assert cc.frames_in >= 3 and cc.frames_out >= 1          # AUTHREP, ACK, voice; ACCEPT
    outcomes = {"decrypted": 0, "refused": 0}
    real = protocol.decrypt_datagram

    def counting(data: bytes, addr: object, crypt: dict[int, object], *rest: object) -> object:
        plain = real(data, addr, crypt, *rest)  # type: ignore[arg-type]
        if crypt:
            if plain is None:
                outcomes["refused"] += 1
            elif plain != data:
                outcomes["decrypted"] += 1
        return plain

    monkeypatch.setattr(protocol, "decrypt_datagram", counting)
    for data in mutations(0xE2C + offer, 400):
        targets.target_endpoint_encrypted(data)
    assert outcomes["decrypted"] > 50 and outcomes["refused"] > 5, outcomes
