"""The emulator: its board model in-process, the kernel's scan from the wire midstate it relies on,
and a full session with the real process over a pty."""

from __future__ import annotations

import os
import struct

import pytest

from hasher_core.asic_codec import (
    RX_NONCE,
    Packet,
    RxNonce,
    RxStatusReply,
    RxStatusRequest,
    TxConfig,
    TxTask,
    Work,
    midstate_from_wire,
    wire_midstate,
)
from hasher_core.errors import AsicCrcError, AsicProtocolError
from hasher_core.header import build_header, header_hash_zero_bits
from hasher_resources.asic.emulator import Board, Emulator, FaultRule
from hasher_resources.asic.framing import PacketReader
from hasher_resources.asic.resource import start_emulator, stop_emulator
from hasher_resources.asic.session import AsicSession
from hasher_resources.sha256 import scan_header_nonces, scan_midstate_nonces

SLOTS = [((i + 1) * 0x11111111) & 0xFFFFFFFF for i in range(12)]
HEADER = build_header(SLOTS, bytes(range(16)) + bytes(12) + bytes([0x1C, 0x1D, 0x1E, 0x1F]))


pytestmark = pytest.mark.timeout(30)  # no test here may hang


def _work(header: bytes = HEADER, work_id: int = 5) -> Work:
    return Work(work_id, wire_midstate(header), header[64:76])


GENESIS_HEADER = bytes.fromhex(
    "01000000" + "00" * 32 + "3ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a"
    "29ab5f49"
    "ffff001d"
    "1dac2b7c"
)


def test_kernel_scan_from_the_wire_midstate_finds_what_the_header_scan_finds():
    state = midstate_from_wire(wire_midstate(HEADER))
    from_mid = scan_midstate_nonces(state, HEADER[64:76], share_bits=6, nonce_count=600, backend="reference")
    whole = scan_header_nonces(HEADER, share_bits=6, nonce_count=600, backend="reference")
    assert from_mid.nonces.tolist() == whole.nonces.tolist() and len(whole.nonces) > 0


def test_genesis_share_is_found_from_the_wire_midstate():
    # Block 0's hash is 000000000019d668…: 43 leading zero bits, more than one 32-bit word.
    nonce = struct.unpack("<I", GENESIS_HEADER[76:])[0]
    state = midstate_from_wire(wire_midstate(GENESIS_HEADER))
    found = scan_midstate_nonces(
        state, GENESIS_HEADER[64:76], share_bits=32, nonce_count=3, nonce_start=nonce - 1, backend="reference"
    )
    assert found.nonces.tolist() == [nonce] and found.bits.tolist() == [43]


def test_chip_windows_split_the_nonce_space_over_chains_and_chips():
    board = Board(chains=2, chips=4, nonces_per_work=64)
    windows = board.chip_windows()
    assert windows.size == 64
    starts = windows[::8]
    assert starts.tolist() == [k * (2**32 // 8) for k in range(8)]


def test_board_search_equals_the_kernel_scan_over_each_chip_window():
    board = Board(chains=1, chips=4, share_bits=5, nonces_per_work=1024)
    found = board.search(_work(), share_bits=5)
    expect = []
    for chip in range(4):
        start = chip * (2**32 // 4)
        expect += scan_header_nonces(
            HEADER, share_bits=5, nonce_count=256, nonce_start=start, backend="reference"
        ).nonces.tolist()
    assert found == expect and found


def test_board_search_hashes_all_chip_windows_in_one_kernel_call(monkeypatch):
    from hasher_resources.sha256 import reference

    calls, scan = [], reference.scan_midstate_windows

    def counted(mid, tail, starts, window_size, skip, count):
        calls.append((starts.tolist(), window_size, count))
        return scan(mid, tail, starts, window_size, skip, count)

    monkeypatch.setattr(reference, "scan_midstate_windows", counted)
    board = Board(chains=2, chips=3, share_bits=3, nonces_per_work=60, backend="reference")
    found = board.search(_work(), share_bits=3)
    starts = [k * (2**32 // 6) for k in range(6)]
    assert calls == [(starts, 10, 60)]
    windows = board.chip_windows().tolist()  # every found nonce in its chip window, in chip order
    assert found and [windows.index(n) for n in found] == sorted(windows.index(n) for n in found)
    assert all(header_hash_zero_bits(HEADER[:76] + struct.pack("<I", n)) >= 3 for n in found)


@pytest.mark.slow  # the cpu backend's Numba kernels load (or, on a cold cache, compile) here
def test_board_hashes_the_same_on_every_kernel_backend():
    from_ref = Board(chains=2, chips=3, share_bits=4, nonces_per_work=300, backend="reference")
    from_cpu = Board(chains=2, chips=3, share_bits=4, nonces_per_work=300, backend="cpu")
    header = bytes(range(9, 89))
    assert from_cpu.search(_work(header), 4) == from_ref.search(_work(header), 4) != []
    assert from_cpu.kernel_backend() == "cpu" and from_cpu.hashes_done == 300
    assert from_cpu.miss(_work(header), 4) == from_ref.miss(_work(header), 4)


def test_share_targets_beyond_the_kernels_255_bits_report_nothing():
    board = Board(chains=1, chips=2, nonces_per_work=64, backend="reference")
    packet = Packet.unpack(TxTask((_work(),), diff=240).pack())  # 32 + 240 = 272 bits
    assert list(board.handle(packet)) == []
    assert board.works_done == 1 and board.hashes_done == 64


@pytest.mark.parametrize(
    ("share_bits", "diff", "target"), [(None, 0, 32), (None, 3, 35), (None, 200, 232), (5, 3, 5)]
)
def test_share_bits_default_to_difficulty_one_plus_the_task_diff(share_bits, diff, target, monkeypatch):
    # Difficulty 1 is 32 leading zero bits and the TxTask diff byte is log2 of the share difficulty,
    # so a board that is not told otherwise reports nonces with >= 32 + diff zero bits.
    board = Board(chains=1, chips=1, share_bits=share_bits, nonces_per_work=256, backend="reference")
    asked: list[int] = []
    search = board.search
    monkeypatch.setattr(board, "search", lambda work, bits: asked.append(bits) or search(work, bits))
    replies = list(board.handle(Packet.unpack(TxTask((_work(), _work(work_id=6)), diff=diff).pack())))
    assert asked == [target, target]
    windows = board.chip_windows().tolist()
    bits = [header_hash_zero_bits(HEADER[:76] + struct.pack("<I", n)) for n in windows]  # hashlib oracle
    assert max(bits) < 32  # none of these 256 nonces is a difficulty-1 share
    if share_bits is None:
        assert replies == []
    else:  # the 5-bit override reports exactly the nonces that reach 5 bits, in each work's reply
        reported = [e.nonce for _, raw in replies for e in RxNonce.unpack(raw).nonces if e.work_id == 5]
        assert reported == [n for n, b in zip(windows, bits, strict=True) if b >= 5] != []


def test_status_reply_reports_the_configured_chains_and_chips():
    board = Board()
    list(board.handle(Packet.unpack(TxConfig(chain_num=3, asic_num=40, frequency_mhz=300).pack())))
    replies = list(board.handle(Packet.unpack(RxStatusRequest().pack())))
    assert [t for t, _ in replies] == ["nonce", "status"]
    status = RxStatusReply.unpack(replies[1][1])
    assert [c.asic_num for c in status.chains] == [40, 40, 40]
    assert status.chains[0].asic_status == (0xFFFFFFFF, 0xFF)
    assert status.reg_value == 300


def test_running_nonce_total_counts_every_reported_nonce():
    board = Board(chains=1, chips=1, share_bits=4, nonces_per_work=512)
    packet = Packet.unpack(TxTask((_work(work_id=1), _work(work_id=2))).pack())
    packets = [RxNonce.unpack(b) for _, b in board.handle(packet)]
    counted = sum(len(p.nonces) for p in packets)
    assert packets[-1].total_nonce_num == counted == board.total_nonces
    assert {e.work_id for p in packets for e in p.nonces} == {1, 2}


def test_wrong_nonce_fault_reports_a_nonce_that_misses_the_target():
    emulator = Emulator(
        Board(chains=1, chips=1, share_bits=4, nonces_per_work=256), [FaultRule("wrong-nonce", "nonce")]
    )
    out = list(emulator.receive(TxTask((_work(),)).pack()))
    first = RxNonce.unpack(out[0]).nonces[0]
    assert header_hash_zero_bits(HEADER[:76] + struct.pack("<I", first.nonce)) < 4


def _raises(exc: type[Exception], match: str):
    def check(out):
        with pytest.raises(exc, match=match):
            Packet.unpack(out[1])
        return True

    return check


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("crc", _raises(AsicCrcError, "stored")),
        ("bad-length", _raises(AsicProtocolError, "impossible length")),
        ("truncate", _raises(AsicProtocolError, "truncated")),
        ("garbage", lambda out: out[1].startswith(b"\x00\x13junk") and PacketReader().feed(out[1]) != []),
        ("drop", lambda out: len(out) == 1),
        ("stall", lambda out: out[1] == 0.25 and isinstance(out[2], bytes)),
    ],
)
def test_status_faults_alter_only_the_chosen_reply(kind, check):
    emulator = Emulator(Board(), [FaultRule(kind, "status", 1)], stall_s=0.25)
    assert check(list(emulator.receive(RxStatusRequest().pack())))
    clean = list(Emulator(Board()).receive(RxStatusRequest().pack()))
    again = [x for x in emulator.receive(RxStatusRequest().pack()) if isinstance(x, bytes)]
    assert again[-1] == clean[-1]  # the second status reply is untouched


def test_disconnect_fault_stops_the_reply_stream():
    emulator = Emulator(Board(), [FaultRule("disconnect", "status")])
    out = list(emulator.receive(RxStatusRequest().pack() + RxStatusRequest().pack()))
    assert emulator.disconnect_requested
    assert all(Packet.unpack(b).packet_type == RX_NONCE for b in out)


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["pty", "tcp"])
def test_full_session_with_the_emulator_process(transport):
    proc, url = start_emulator(
        transport=transport, share_bits=8, nonces_per_work=2048, chains=2, chips=8, backend="cpu"
    )
    try:
        assert url.startswith("/dev/pts/" if transport == "pty" else "socket://127.0.0.1:")
        with AsicSession(url, share_bits=8, chain_count=2, chip_count=8, timeout_s=2.0) as dev:
            status = dev.configure()
            assert status.emulated and status.chains == 2 and status.chips_alive == 16
            headers = [HEADER, bytes(80), os.urandom(80)]
            reports = dev.submit(headers)
            assert reports and all(r.valid for r in reports)
            for index, header in enumerate(headers):
                mine = [r.nonce for r in reports if r.header_index == index]
                expect = []
                for chip in range(16):
                    start = chip * (2**32 // 16)
                    scan = scan_header_nonces(
                        header, share_bits=8, nonce_count=128, nonce_start=start, backend="reference"
                    )
                    expect += scan.nonces.tolist()
                assert mine == sorted(expect)
            assert dev.counters.hardware_errors == 0 and dev.counters.nonces_verified == len(reports)
    finally:
        stop_emulator(proc)
    assert proc.returncode is not None
