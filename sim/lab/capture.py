"""Capture what crosses the IAX2 trunk on loopback, and count it with tshark's iax2 dissector.

``Capture(path, filter)`` runs ``dumpcap`` on ``lo`` for the duration of a ``with`` block (or
``start()``/``stop()``); ``decode_counts(path)`` reads the file back with ``tshark`` and counts full
frames, mini frames and trunk datagrams, per direction.  tshark is an independent second opinion
on what crossed the wire.  Both need root (or capture rights) and the ``tshark`` package.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from iaxgw.gateway.safefs import create_private_file

DEFAULT_FILTER = "udp port 4569 and host 127.0.0.10"

# tshark's iax2.packet_type values (epan/dissectors/packet-iax2.c)
PACKET_TYPES = {0: "mini", 1: "full", 2: "video", 3: "trunk"}


class CaptureError(RuntimeError):
    """dumpcap or tshark failed; the message says why."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise CaptureError(f"{name} not found: install the tshark package (iaxgw lab provision "
                           "does) ")
    return path


class Capture:
    """dumpcap on an interface into a pcapng file, as a context manager.

    >>> with Capture("/tmp/trunk.pcapng", "udp port 4569 and host 127.0.0.10") as cap:
    ...     ...   # make traffic
    >>> decode_counts(cap.path).trunk
    """

    def __init__(self, path: str | os.PathLike[str], capture_filter: str = DEFAULT_FILTER,
                 interface: str = "lo", *, start_timeout: float = 10.0,
                 classic_pcap: bool = False, buffer_mib: int = 0) -> None:
        self.path = Path(path)
        #: write a classic pcap (``dumpcap -P``, readable by
        #: :func:`iaxgw.gateway.driver.pcap.read_pcap`) instead of pcapng
        self.classic_pcap = classic_pcap
        #: kernel capture buffer (``dumpcap -B``, MiB; 0: dumpcap's default of 2 MiB), so a busy
        #: machine does not drop packets before dumpcap writes them
        self.buffer_mib = buffer_mib
        self.filter = capture_filter
        self.interface = interface
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._errfile: tempfile._TemporaryFileWrapper[bytes] | None = None
        self.started_at = 0.0
        self.stopped_at = 0.0

    @property
    def seconds(self) -> float:
        """How long the capture ran."""
        end = self.stopped_at or time.monotonic()
        return max(0.0, end - self.started_at) if self.started_at else 0.0

    @property
    def pid(self) -> int | None:
        """dumpcap's process id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> Capture:
        dumpcap = _tool("dumpcap")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the capture holds md5 challenges and responses: the file is ours alone (0600), made
        # here without following a link planted at the path, and dumpcap writes into it
        # through its stdout instead of opening the path itself
        try:
            fd = create_private_file(self.path)
        except OSError as exc:
            raise CaptureError(f"cannot create the capture file: {exc}") from exc
        self._errfile = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="iaxgw-dumpcap-", suffix=".err")
        try:
            self._proc = subprocess.Popen(
                [dumpcap, "-q", *(["-P"] if self.classic_pcap else []),
                 *(["-B", str(self.buffer_mib)] if self.buffer_mib else []), "-i",
                 self.interface, "-f", self.filter, "-w", "-"],
                stdin=subprocess.DEVNULL, stdout=fd, stderr=self._errfile)
        finally:
            os.close(fd)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._stderr()
                self._cleanup()
                raise CaptureError(f"dumpcap exited with {self._proc.returncode}: {err}")
            if "Capturing on" in self._stderr() and self.path.exists():
                self.started_at = time.monotonic()
                return self
            time.sleep(0.05)
        self.stop()
        raise CaptureError(f"dumpcap did not start capturing within {self.start_timeout} s")

    def _stderr(self) -> str:
        if self._errfile is None:
            return ""
        return Path(self._errfile.name).read_text(errors="replace").strip()

    def stop(self, timeout: float = 10.0) -> Path:
        """Stop dumpcap (SIGTERM, then SIGKILL) and return the file's path."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            # let the kernel hand the last packets over before closing
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.started_at and not self.stopped_at:
            self.stopped_at = time.monotonic()
        self._cleanup()
        return self.path

    def _cleanup(self) -> None:
        if self._errfile is not None:
            self._errfile.close()
            self._errfile = None

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@dataclass
class IaxCounts:
    """What tshark saw in a capture: datagram counts by kind and by direction."""

    full: int = 0
    mini: int = 0
    trunk: int = 0
    video: int = 0
    other: int = 0                       # UDP datagrams tshark did not decode as IAX2
    trunk_entries: int = 0               # media frames carried inside trunk datagrams
    trunk_bytes: int = 0                 # UDP payload bytes of trunk datagrams
    by_direction: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_time: float = 0.0
    last_time: float = 0.0

    @property
    def total(self) -> int:
        return self.full + self.mini + self.trunk + self.video + self.other

    @property
    def span(self) -> float:
        """Seconds from the first to the last datagram."""
        return max(0.0, self.last_time - self.first_time)

    def rate(self, seconds: float | None = None) -> float:
        """Datagrams per second over ``seconds`` (default: the capture's span)."""
        seconds = seconds or self.span
        return self.total / seconds if seconds > 0 else 0.0


def decode_counts(path: str | os.PathLike[str], *, timeout: float = 300.0) -> IaxCounts:
    """Decode a capture with tshark and count full / mini / trunk datagrams."""
    tshark = _tool("tshark")
    argv = [tshark, "-n", "-r", str(path), "-d", "udp.port==4569,iax2", "-T", "fields",
            "-E", "separator=\t", "-e", "frame.time_epoch", "-e", "ip.src", "-e", "ip.dst",
            "-e", "iax2.packet_type", "-e", "udp.payload"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CaptureError(f"tshark timed out reading {path}") from exc
    if proc.returncode != 0:
        raise CaptureError(f"tshark failed on {path} (exit {proc.returncode}): "
                           f"{proc.stderr.strip()[-500:]}")
    return parse_tshark_fields(proc.stdout)


def parse_tshark_fields(text: str) -> IaxCounts:
    """Count the rows printed by ``decode_counts``'s tshark command."""
    counts = IaxCounts()
    for line in text.splitlines():
        cols = line.split("\t")
        if len(cols) < 5:
            cols += [""] * (5 - len(cols))
        ts, src, dst, ptype, payload_hex = cols[:5]
        if not ts:
            continue
        t = float(ts)
        if not counts.first_time:
            counts.first_time = t
        counts.last_time = t
        counts.by_direction[(src, dst)] += 1
        kind = PACKET_TYPES.get(int(ptype.split(",")[0])) if ptype else None
        if kind == "full":
            counts.full += 1
        elif kind == "mini":
            counts.mini += 1
        elif kind == "video":
            counts.video += 1
        elif kind == "trunk":
            counts.trunk += 1
            payload = bytes.fromhex(payload_hex.replace(":", ""))
            counts.trunk_bytes += len(payload)
            counts.trunk_entries += count_trunk_entries(payload)
        else:
            counts.other += 1
    return counts


def count_trunk_entries(payload: bytes) -> int:
    """Media frames in one trunk datagram (RFC 5456 section 8.5.2.1; tshark 4.0 cannot count
    entries without trunk timestamps, so we walk them here).

    Meta header: 0x0000, meta command 1, command data (bit 0: timestamps), 32-bit timestamp.
    Entries: without timestamps ``callno(2) len(2) data``; with them ``len(2) callno(2) ts(2)
    data``.  A truncated tail is not counted.
    """
    if len(payload) < 8 or payload[0:2] != b"\0\0" or payload[2] & 0x7F != 1:
        return 0
    with_ts = bool(payload[3] & 1)
    pos, n = 8, 0
    while True:
        head = 6 if with_ts else 4
        if pos + head > len(payload):
            return n
        if with_ts:
            length = int.from_bytes(payload[pos:pos + 2], "big")
        else:
            length = int.from_bytes(payload[pos + 2:pos + 4], "big")
        if pos + head + length > len(payload):
            return n
        pos += head + length
        n += 1
