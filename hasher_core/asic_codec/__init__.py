"""The Bitmain Antminer S3 packet codec (DESIGN §7): packets, records with pack()/unpack(), the CRC.

This package owns the bytes of the S3 protocol and nothing else: no I/O, no stream reassembly (that
is ``hasher_resources.asic.framing``), no device policy (``hasher_resources.asic.session``).

Every packet is ``[type u8][version u8][length u16 LE] … [CRC-16/MODBUS, LE]`` with
``length = total bytes − 4``; the CRC covers everything before it. Field layouts follow cgminer's
S3 driver (``driver-bitmain.h`` with ``USE_ANT_S3``): the host sends TxConfig (0x51), TxTask (0x52)
and RxStatus requests (0x53); the device answers RxStatus data (0xA1) and RxNonce (0xA2). Host
flag bytes are bit-reversed before the CRC (cgminer's ``bitswap``); the device's reply flags are
read as they come (cgminer does not swap them back).

Where the Antminer documentation disagrees: its sample status request and config packets are
4 bytes longer (16 vs 12, 28 vs 24) and, read with the cgminer layout, the config would claim 32
chains of 96 chips at 1280 MHz. :class:`Packet` accepts both sizes and re-packs them byte for byte;
the record codec decodes the cgminer layout only and, for the longer one, raises
:class:`UnsupportedVariantError` naming the variant (``Packet.variant``) instead of mis-decoding it.
The docs also call the CRC "CRC-16-CCITT"; it is CRC-16/MODBUS (every sample verifies with it).

Words inside work items (work_id, midstate words) are little-endian, as cgminer sends them: the
midstate is the 8 SHA-256 state words after header bytes 0–63 (``hasher_core.header.midstate``),
each LE32 on the wire (:func:`wire_midstate`). ``data2`` is header bytes 64–75 as they appear in the
header; whether the BM1382 wants those words byte-swapped (cgminer keeps ``work->data`` word-swapped
internally) has to be confirmed on a real board.
"""

from __future__ import annotations

import struct

from hasher_core.header import midstate

from .commands import ConfigFlags, ControlFlags, RxStatusRequest, TxConfig, TxTask, Work
from .packet import (
    CGMINER_SIZES,
    CRC_BYTES,
    DOCS_SIZES,
    HEAD_BYTES,
    MAX_ASICS_PER_CHAIN,
    MAX_CHAINS,
    MAX_FANS,
    MAX_NONCES_PER_REPLY,
    MAX_TEMPS,
    MAX_WORKS_PER_TASK,
    PACKET_NAMES,
    PACKET_TYPES,
    RX_NONCE,
    RX_STATUS_REPLY,
    RX_STATUS_REQUEST,
    TX_CONFIG,
    TX_TASK,
    VARIANT_CGMINER,
    VARIANT_DOCS,
    WORK_BYTES,
    Packet,
    PacketRecord,
    bitswap,
    crc16_modbus,
    total_size_allowed,
)
from .replies import ChainStatus, NonceEntry, RxNonce, RxStatusReply

Record = TxConfig | TxTask | RxStatusRequest | RxStatusReply | RxNonce
_RECORDS: dict[int, type[PacketRecord]] = {
    TX_CONFIG: TxConfig,
    TX_TASK: TxTask,
    RX_STATUS_REQUEST: RxStatusRequest,
    RX_STATUS_REPLY: RxStatusReply,
    RX_NONCE: RxNonce,
}


def decode(packet: Packet) -> Record:
    """The typed record of a packet (raises :class:`UnsupportedVariantError` for the docs layouts)."""
    return _RECORDS[packet.packet_type].from_packet(packet)


def wire_midstate(header: bytes) -> bytes:
    """The 32 midstate bytes of a TxTask work item for an 80-byte header: the 8 SHA-256 state words
    after header bytes 0–63 (``hasher_core.header.midstate``), each little-endian as cgminer sends
    them. Raises ValueError when ``header`` is not 80 bytes."""
    return struct.pack("<8I", *midstate(header))


def midstate_from_wire(wire: bytes) -> tuple[int, ...]:
    """Inverse of :func:`wire_midstate`: the 8 state words from a work item's 32 midstate bytes.

    Raises ValueError when ``wire`` is not 32 bytes.
    """
    if len(wire) != 32:
        raise ValueError(f"a midstate is 32 bytes, got {len(wire)}")
    return struct.unpack("<8I", wire)


__all__ = [
    "CGMINER_SIZES",
    "CRC_BYTES",
    "DOCS_SIZES",
    "HEAD_BYTES",
    "MAX_ASICS_PER_CHAIN",
    "MAX_CHAINS",
    "MAX_FANS",
    "MAX_NONCES_PER_REPLY",
    "MAX_TEMPS",
    "MAX_WORKS_PER_TASK",
    "PACKET_NAMES",
    "PACKET_TYPES",
    "RX_NONCE",
    "RX_STATUS_REPLY",
    "RX_STATUS_REQUEST",
    "TX_CONFIG",
    "TX_TASK",
    "VARIANT_CGMINER",
    "VARIANT_DOCS",
    "WORK_BYTES",
    "ChainStatus",
    "ConfigFlags",
    "ControlFlags",
    "NonceEntry",
    "Packet",
    "PacketRecord",
    "Record",
    "RxNonce",
    "RxStatusReply",
    "RxStatusRequest",
    "TxConfig",
    "TxTask",
    "Work",
    "bitswap",
    "crc16_modbus",
    "decode",
    "midstate_from_wire",
    "total_size_allowed",
    "wire_midstate",
]
