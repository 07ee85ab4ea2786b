"""TWS API socket framing and field encoding, as IB Gateway speaks it at server version 178.

After the handshake every message, in both directions, is a 4-byte big-endian length followed by
that many bytes of NUL-terminated ASCII fields (the last field is NUL-terminated too). The first
field is the message id. The handshake is the exception: the client sends the raw bytes
``API\\0`` and then one length-prefixed payload ``v157..178`` that is NOT NUL-terminated.
"""

from __future__ import annotations

import builtins
import struct
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

SERVER_VERSION = 178
"""The version ib_async 2.1 asks for at most, and the one a current Gateway agrees to with it."""

MIN_SERVER_VERSION = 100
"""Below this the simulator refuses to negotiate (real gateways refuse very old clients too)."""

API_SIGN = b"API\0"
_LENGTH = struct.Struct(">I")

# IB's "unset" sentinels: clients may send them instead of empty strings.
UNSET_INTEGER = 2**31 - 1
UNSET_DOUBLE = 1.7976931348623157e308
MAX_FRAME = 16 * 1024 * 1024
_HUGE = Decimal("1e300")

Field = str | int | float | Decimal | bool | None


class ProtocolError(Exception):
    """The peer sent something that does not follow the protocol."""


def format_field(value: Field) -> str:
    """Render one value the way TWS does: bools as 0/1, None as empty, Decimals without exponent."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal):
        # ib_async parses with float(); plain notation keeps the log readable and exact.
        text = format(value, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text or "0"
    return str(value)


def encode(fields: Iterable[Field]) -> bytes:
    """Frame one message: length prefix, then each field NUL-terminated."""
    # Hot path (every message): str and int need no conversion beyond str().
    parts = [f if type(f) is str else (str(f) if type(f) is int else format_field(f)) for f in fields]
    parts.append("")
    payload = "\0".join(parts).encode()
    return _LENGTH.pack(len(payload)) + payload


def frame(payload: bytes) -> bytes:
    """Length-prefix an already built payload."""
    return _LENGTH.pack(len(payload)) + payload


def split_frames(buffer: bytearray) -> list[bytes]:
    """Remove and return every complete frame payload at the start of `buffer`."""
    payloads: list[bytes] = []
    offset = 0
    size = len(buffer)
    while size - offset >= 4:
        (length,) = _LENGTH.unpack_from(buffer, offset)
        if length > MAX_FRAME:
            raise ProtocolError(f"frame of {length} bytes is larger than {MAX_FRAME}")
        end = offset + 4 + length
        if end > size:
            break
        payloads.append(bytes(buffer[offset + 4 : end]))
        offset = end
    if offset:
        del buffer[:offset]
    return payloads


def parse_fields(payload: bytes) -> list[str]:
    """Split a payload into its fields (dropping the empty string after the final NUL)."""
    fields = payload.decode(errors="backslashreplace").split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    return fields


def parse_version_range(payload: bytes) -> tuple[int, int, str]:
    """Parse the handshake payload ``v<min>..<max>[ <connect options>]``."""
    text = payload.decode(errors="replace")
    if not text.startswith("v"):
        raise ProtocolError(f"bad handshake payload {text!r}")
    versions, _, options = text[1:].partition(" ")
    low, sep, high = versions.partition("..")
    try:
        return int(low), int(high if sep else low), options
    except ValueError as exc:
        raise ProtocolError(f"bad handshake payload {text!r}") from exc


class FieldReader:
    """Read the fields of one request in order, with TWS's conventions for empty and unset values."""

    __slots__ = ("fields", "pos")

    def __init__(self, fields: list[str], start: int = 1) -> None:
        self.fields = fields
        self.pos = start

    def remaining(self) -> int:
        return len(self.fields) - self.pos

    def str(self) -> str:
        if self.pos >= len(self.fields):
            raise ProtocolError(f"message {self.fields[:1]} ended after {self.pos} fields")
        value = self.fields[self.pos]
        self.pos += 1
        return value

    def int(self, default: int = 0) -> int:
        text = self.str()
        if text == "":
            return default
        try:
            value = int(text)
        except ValueError as exc:
            raise ProtocolError(f"field {self.pos - 1} is not an integer: {text!r}") from exc
        return default if value == UNSET_INTEGER else value

    def bool(self) -> bool:
        text = self.str()
        if text in ("", "0", "false", "False"):
            return False
        if text in ("1", "true", "True"):
            return True
        raise ProtocolError(f"field {self.pos - 1} is not a boolean: {text!r}")

    def decimal(self) -> Decimal | None:
        """A double on the wire; empty, IB's max double and 'Infinite' mean 'not set' here."""
        text = self.str()
        if text == "" or text == "Infinite":
            return None
        try:
            value = Decimal(text)
        except InvalidOperation as exc:
            raise ProtocolError(f"field {self.pos - 1} is not a number: {text!r}") from exc
        # IB's "unset" double is the largest float; anything that large is a sentinel, not a price.
        if not value.is_finite() or abs(value) > _HUGE:
            return None
        return value

    def skip(self, count: builtins.int) -> None:
        for _ in range(count):
            self.str()
