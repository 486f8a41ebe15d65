"""Encrypted call recordings: the file format, its writer and its reader; sans-IO.

A recording is encrypted before a byte of it leaves memory. The writer keeps the
packets of the last second or so in memory and hands out encrypted chunks to append to
the file; no plaintext is ever written to disk or to a temporary file.

File layout::

    "ANSIMREC" | version (1 byte) | header length (4 bytes, big endian) | header
    chunk*     each: ciphertext length (4 bytes, big endian) | AES-256-GCM ciphertext+tag

The header is msgpack: recording id, creation time, the RSA-OAEP-SHA256 wrapped
AES-256 key (a fresh random key per recording), the SHA-256 fingerprint of the
operator's public key, and a random 4-byte nonce prefix. It holds nothing about the
call: the call id and the legs are in the first encrypted record. Chunk ``i`` is
sealed with nonce ``prefix | i`` (64-bit) and associated data ``SHA-256(header) |
i | final``, so a changed byte anywhere, a dropped, repeated or reordered chunk, or a
header that does not belong to the chunks fails authentication; the last chunk carries
``final = 1`` (the end marker), and a file that stops before it is reported as
truncated. A crash loses what was not yet sealed: at most one chunk (about a second).

Plaintext records inside the chunks::

    type (1) | channel (1) | milliseconds since the recording began (4) | length (2) | body

``META`` bodies are msgpack maps (call id, channels, codecs by payload type); ``RTP``
bodies are the RTP packets as received on that channel (header and payload, so the
renderer can place them by timestamp and decode them at decryption time). Channel 0
is the left track, channel 1 the right.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "REC_META",
    "REC_RTP",
    "CorruptRecording",
    "Record",
    "RecordingError",
    "RecordingHeader",
    "RecordingReader",
    "RecordingWriter",
    "TruncatedRecording",
    "WrongKey",
    "key_fingerprint",
    "load_private_key",
    "load_public_key",
    "read_header",
]

MAGIC = b"ANSIMREC"
VERSION = 1
ALGORITHM = "AES-256-GCM/RSA-OAEP-SHA256"
REC_META = 1
REC_RTP = 2
_RECORD = struct.Struct(">BBIH")
_LEN = struct.Struct(">I")
_SEQ = struct.Struct(">Q")
MAX_CHUNK = 1 << 24
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class RecordingError(Exception):
    """A recording that cannot be read: the message says why."""


class WrongKey(RecordingError):
    """The private key given is not the one this recording was made for."""


class CorruptRecording(RecordingError):
    """A byte of the recording was changed, or its chunks are out of order."""


class TruncatedRecording(RecordingError):
    """The recording stops before its end marker (a crash, or a cut file)."""


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """The operator's RSA public key (PEM, SubjectPublicKeyInfo) that recordings are wrapped for."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
        raise ValueError("the recording key must be an RSA public key of at least 2048 bits")
    return key


def load_private_key(pem: bytes, passphrase: bytes | None = None) -> rsa.RSAPrivateKey:
    """The operator's RSA private key (PEM, optionally passphrase-protected)."""
    key = serialization.load_pem_private_key(pem, password=passphrase)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def key_fingerprint(key: rsa.RSAPublicKey) -> str:
    """SHA-256 of the public key's DER SubjectPublicKeyInfo, hex."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True, slots=True)
class RecordingHeader:
    """What a recording says about itself in the clear (nothing about the call)."""

    recording_id: str
    created: float
    key_fingerprint: str
    wrapped_key: bytes
    nonce_prefix: bytes
    raw: bytes  # the header's bytes as stored: hashed into every chunk's associated data
    data_offset: int


def _aad(header_hash: bytes, seq: int, final: bool) -> bytes:
    return header_hash + _SEQ.pack(seq) + (b"\x01" if final else b"\x00")


class RecordingWriter:
    """Builds a recording's bytes: :meth:`header` first, then each :meth:`take_chunk`.

    ``add_rtp`` and ``add_meta`` only append to an in-memory buffer; the caller decides
    when to seal it (``buffered`` bytes, or age) and appends what :meth:`take_chunk`
    returns to the file. :meth:`finish` seals the rest with the end marker.
    """

    __slots__ = (
        "_aead",
        "_buf",
        "_finished",
        "_hash",
        "_header",
        "_prefix",
        "_seq",
        "packets",
        "recording_id",
    )

    def __init__(
        self,
        public_key: rsa.RSAPublicKey,
        recording_id: str,
        created: float,
        meta: dict[str, Any],
    ) -> None:
        key = AESGCM.generate_key(bit_length=256)
        self._aead = AESGCM(key)
        self._prefix = os.urandom(4)
        fields = {
            "id": recording_id,
            "created": created,
            "alg": ALGORITHM,
            "kid": key_fingerprint(public_key),
            "key": public_key.encrypt(key, _OAEP),
            "nonce": self._prefix,
        }
        body = msgpack.packb(fields, use_bin_type=True)
        self._header = MAGIC + bytes((VERSION,)) + _LEN.pack(len(body)) + body
        self._hash = hashlib.sha256(body).digest()
        self._seq = 0
        self._buf = bytearray()
        self._finished = False
        self.recording_id = recording_id
        self.packets = 0
        self.add_meta(0, meta)

    def header(self) -> bytes:
        """The file's first bytes."""
        return self._header

    @property
    def buffered(self) -> int:
        """Plaintext bytes waiting to be sealed."""
        return len(self._buf)

    def add_meta(self, ms: int, meta: dict[str, Any]) -> None:
        """A META record (call id, channels, codecs); later ones update earlier ones."""
        body = msgpack.packb(meta, use_bin_type=True)
        if len(body) > 0xFFFF:
            raise ValueError("recording metadata too large")
        self._buf += _RECORD.pack(REC_META, 0, ms & 0xFFFFFFFF, len(body))
        self._buf += body

    def add_rtp(self, channel: int, ms: int, packet: bytes | bytearray | memoryview) -> None:
        """An RTP packet received on ``channel`` at ``ms`` since the recording began."""
        buf = self._buf
        buf += _RECORD.pack(REC_RTP, channel, ms & 0xFFFFFFFF, len(packet))
        buf += packet
        self.packets += 1

    def _seal(self, final: bool) -> bytes:
        nonce = self._prefix + _SEQ.pack(self._seq)
        sealed = self._aead.encrypt(nonce, bytes(self._buf), _aad(self._hash, self._seq, final))
        self._seq += 1
        self._buf.clear()
        return _LEN.pack(len(sealed)) + sealed

    def take_chunk(self) -> bytes | None:
        """The buffered records sealed as one chunk, or None when nothing is buffered."""
        if self._finished:
            raise RecordingError("recording already finished")
        if not self._buf:
            return None
        return self._seal(False)

    def finish(self) -> bytes:
        """The last chunk, with the end marker (it may hold no record)."""
        if self._finished:
            raise RecordingError("recording already finished")
        self._finished = True
        return self._seal(True)


def _parse_header(data: bytes) -> RecordingHeader:
    if len(data) < 13 or not data.startswith(MAGIC):
        raise RecordingError("not an ansim recording")
    if data[8] != VERSION:
        raise RecordingError(f"unknown recording format version {data[8]}")
    (length,) = _LEN.unpack_from(data, 9)
    if length > 65536 or len(data) < 13 + length:
        raise TruncatedRecording("recording header cut short")
    raw = bytes(data[13 : 13 + length])
    try:
        fields = msgpack.unpackb(raw, raw=False)
        header = RecordingHeader(
            recording_id=str(fields["id"]),
            created=float(fields["created"]),
            key_fingerprint=str(fields["kid"]),
            wrapped_key=bytes(fields["key"]),
            nonce_prefix=bytes(fields["nonce"]),
            raw=raw,
            data_offset=13 + length,
        )
    except (ValueError, KeyError, TypeError, msgpack.ExtraData) as exc:
        raise CorruptRecording(f"unreadable recording header: {exc}") from None
    if fields.get("alg") != ALGORITHM or len(header.nonce_prefix) != 4:
        raise RecordingError(f"unsupported recording algorithm {fields.get('alg')!r}")
    return header


def read_header(fp: BinaryIO) -> RecordingHeader:
    """The clear header of a recording file (no key needed)."""
    fp.seek(0)
    head = fp.read(13)
    if len(head) == 13 and head.startswith(MAGIC):
        (length,) = _LEN.unpack_from(head, 9)
        head += fp.read(min(length, 65536))
    return _parse_header(head)


@dataclass(frozen=True, slots=True)
class Record:
    """One plaintext record: ``META`` (``meta`` set) or ``RTP`` (``packet`` set)."""

    kind: int
    channel: int
    ms: int
    packet: bytes
    meta: dict[str, Any] | None = None


class RecordingReader:
    """Decrypts a recording with the operator's private key.

    :meth:`records` yields every record of every authenticated chunk in order and
    raises :class:`CorruptRecording` at the first chunk that fails, or
    :class:`TruncatedRecording` if the file ends before the end marker. Nothing is
    yielded from a chunk before it has been authenticated whole.
    """

    def __init__(self, fp: BinaryIO, private_key: rsa.RSAPrivateKey) -> None:
        self._fp = fp
        self.header = read_header(fp)
        if key_fingerprint(private_key.public_key()) != self.header.key_fingerprint:
            raise WrongKey(
                "this recording was made for another key "
                f"(fingerprint {self.header.key_fingerprint[:16]}...)"
            )
        try:
            key = private_key.decrypt(self.header.wrapped_key, _OAEP)
        except ValueError:
            raise CorruptRecording("the wrapped recording key does not decrypt") from None
        if len(key) != 32:
            raise CorruptRecording("the wrapped recording key is not an AES-256 key")
        self._aead = AESGCM(key)
        self._hash = hashlib.sha256(self.header.raw).digest()
        self.chunks = 0
        self.complete = False

    def _chunks(self) -> Iterator[bytes]:
        fp = self._fp
        fp.seek(self.header.data_offset)
        seq = 0
        while True:
            head = fp.read(4)
            if not head:
                raise TruncatedRecording(
                    f"recording ends after {seq} chunk(s) without its end marker"
                )
            if len(head) < 4:
                raise TruncatedRecording(f"recording cut inside chunk {seq}")
            (length,) = _LEN.unpack(head)
            if length < 16 or length > MAX_CHUNK:
                raise CorruptRecording(f"chunk {seq} has an impossible length {length}")
            sealed = fp.read(length)
            if len(sealed) < length:
                raise TruncatedRecording(f"recording cut inside chunk {seq}")
            nonce = self.header.nonce_prefix + _SEQ.pack(seq)
            for final in (False, True):
                try:
                    plain = self._aead.decrypt(nonce, sealed, _aad(self._hash, seq, final))
                except InvalidTag:
                    continue
                break
            else:
                raise CorruptRecording(f"chunk {seq} fails authentication (changed or reordered)")
            seq += 1
            self.chunks = seq
            yield plain
            if final:
                if fp.read(1):
                    raise CorruptRecording("bytes after the end marker")
                self.complete = True
                return

    def records(self) -> Iterator[Record]:
        for plain in self._chunks():
            pos = 0
            size = len(plain)
            while pos < size:
                if pos + 8 > size:
                    raise CorruptRecording("record header cut inside a chunk")
                kind, channel, ms, length = _RECORD.unpack_from(plain, pos)
                pos += 8
                body = plain[pos : pos + length]
                if len(body) < length:
                    raise CorruptRecording("record cut inside a chunk")
                pos += length
                if kind == REC_META:
                    meta = msgpack.unpackb(body, raw=False, strict_map_key=False)
                    yield Record(kind, channel, ms, b"", meta if isinstance(meta, dict) else {})
                elif kind == REC_RTP:
                    yield Record(kind, channel, ms, body)
                # Unknown record types from a later version are skipped.
