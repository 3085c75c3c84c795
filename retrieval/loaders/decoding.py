"""Bytes to text: UTF-8 first, the Japanese legacy encodings next, and a damaged UTF-8 file read
with its few bad bytes replaced rather than dropped whole.

cp932 in Python maps almost every byte to *something* (0x80 to U+0080, 0xA0 to a private-use
character...), so a successful decode proves little: we also count characters that real text
does not contain and reject or rank candidates by them.

UTF-8 is self-checking: a cp932 or EUC-JP text rarely forms valid multi-byte sequences by chance
(at best a few in ten of its characters do). A file whose non-ASCII text is overwhelmingly valid
UTF-8 is therefore a UTF-8 file with some damage (a stray byte, a cut at the end), not a
legacy-encoded one, and it is read as UTF-8 with U+FFFD for the bad bytes and a warning.
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

from retrieval.loaders.model import UnloadableFile

# Tried after UTF-8, in this order; a tie in plausibility goes to the earlier one.
_JAPANESE_ENCODINGS = ("cp932", "euc_jp")
# More than this share of control or private-use characters means we guessed wrong (or binary).
_MAX_SUSPICIOUS_SHARE = 0.01
# Damaged UTF-8: at least this many valid non-ASCII characters per bad byte...
_MIN_VALID_PER_BAD_BYTE = 10
# ...or, when no legacy encoding fits either, at most this share of bad bytes in the file.
_MAX_BAD_BYTE_SHARE = 0.01

_ASCII = bytes(range(128))
# What errors="surrogateescape" turns each undecodable byte into.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


class DecodedText(NamedTuple):
    text: str
    warnings: list[str]


def decode_text(data: bytes) -> str:
    """The text of a file's bytes; see `decode` (this drops its warnings)."""
    return decode(data).text


def decode(data: bytes) -> DecodedText:
    """Decode a text file: UTF-8 (BOM or not), UTF-16 with a BOM, ISO-2022-JP, else the more
    plausible of cp932 (Shift_JIS) and EUC-JP, else damaged UTF-8 with U+FFFD for its bad bytes.

    Raises `UnloadableFile` for binary data and for bytes that are none of these.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return DecodedText(data.decode("utf-16"), [])
        except UnicodeDecodeError as error:
            raise UnloadableFile("undecodable: broken UTF-16") from error
    if b"\x00" in data:
        raise UnloadableFile("binary file (contains NUL bytes)")
    if b"\x1b$" in data:  # ISO-2022-JP escape sequences; such bytes are also valid ASCII
        try:
            return DecodedText(data.decode("iso2022_jp"), [])
        except UnicodeDecodeError:
            pass
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    else:
        if _suspicious_share(text) > _MAX_SUSPICIOUS_SHARE:
            raise UnloadableFile("binary file (control characters)")
        return DecodedText(text, [])

    bad_bytes, valid_non_ascii = _utf8_damage(data)
    if bad_bytes * _MIN_VALID_PER_BAD_BYTE <= valid_non_ascii:
        return _damaged_utf8(data, bad_bytes)
    legacy = _best_legacy_decoding(data)
    if legacy is not None:
        return DecodedText(legacy, [])
    if bad_bytes <= len(data) * _MAX_BAD_BYTE_SHARE:
        return _damaged_utf8(data, bad_bytes)
    raise UnloadableFile("undecodable: not UTF-8, Shift_JIS (cp932) or EUC-JP text")


def _utf8_damage(data: bytes) -> tuple[int, int]:
    """(bytes that are not valid UTF-8, valid non-ASCII characters) of `data`."""
    escaped = data.decode("utf-8", "surrogateescape")
    bad_bytes = len(_ESCAPED_BYTE.findall(escaped))
    ascii_chars = len(data) - len(data.translate(None, _ASCII))
    return bad_bytes, len(escaped) - ascii_chars - bad_bytes


def _damaged_utf8(data: bytes, bad_bytes: int) -> DecodedText:
    text = data.decode("utf-8-sig", "replace")
    replaced = text.count("\ufffd")
    if (_suspicious_count(text) - replaced) / max(len(text), 1) > _MAX_SUSPICIOUS_SHARE:
        raise UnloadableFile("binary file (control characters)")
    plural = "byte" if bad_bytes == 1 else "bytes"
    return DecodedText(text, [f"{bad_bytes} undecodable {plural} replaced with U+FFFD"])


def _best_legacy_decoding(data: bytes) -> str | None:
    candidates: list[tuple[int, int, str]] = []
    for order, encoding in enumerate(_JAPANESE_ENCODINGS):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if _suspicious_share(text) > _MAX_SUSPICIOUS_SHARE:
            continue
        # Half-width katakana are rare in real documents but typical of a wrong guess.
        oddness = _suspicious_count(text) + sum(1 for ch in text if "\uff61" <= ch <= "\uff9f")
        candidates.append((oddness, order, text))
    return min(candidates)[2] if candidates else None


def _suspicious_count(text: str) -> int:
    return sum(
        1
        for ch in text
        if ch == "\ufffd"
        or (ch not in "\t\n\r\f\v" and unicodedata.category(ch) in ("Cc", "Co", "Cs"))
    )


def _suspicious_share(text: str) -> float:
    return _suspicious_count(text) / max(len(text), 1)


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")
