"""Unpack zip archives within budget: each member a child file, a zip bomb a clear refusal."""

from __future__ import annotations

import copy
import io
import struct
import zipfile
import zlib
from dataclasses import dataclass

from intake.children import ChildFile, child_name, guessed_type
from intake.readers import ReaderError

#: Below this size a member may compress as well as it likes: a blank uncompressed scan or a
#: padded text legitimately passes 100x, and the total cap bounds what such members add up to.
RATIO_FLOOR_BYTES = 1024 * 1024
#: A central directory entry is 46 bytes plus name, extra field and comment; past this per
#: allowed member, the directory itself is the attack (millions of entries to parse).
MAX_DIRECTORY_BYTES_PER_MEMBER = 4096
_CHUNK = 1024 * 1024
_ENCRYPTED = 0x1
_END_OF_DIRECTORY = b"PK\x05\x06"


@dataclass(frozen=True)
class Unzipped:
    members: tuple[ChildFile, ...]
    office_package: bool  # an OOXML document (docx, xlsm...), not an archive to unpack


def unpack_zip(content: bytes, max_total_bytes: int, max_members: int, max_ratio: int) -> Unzipped:
    """Check the central directory against the limits, then extract while counting."""
    _check_directory_size(content, max_members)
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except Exception as exc:
        raise ReaderError("unreadable", f"zip cannot be opened: {exc}"[:500]) from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > max_members:
            raise ReaderError(
                "refused",
                f"archive limit: {len(infos)} members, over the {max_members}-member limit",
            )
        files = [info for info in infos if not info.is_dir()]
        _check_declared_sizes(files, len(content), max_total_bytes, max_ratio)
        office = any(info.filename == "[Content_Types].xml" for info in files)
        members = tuple(
            _member(archive, info, child_name(info.filename, f"member-{n}"))
            for n, info in enumerate(files, start=1)
        )
    return Unzipped(members, office)


def _check_directory_size(content: bytes, max_members: int) -> None:
    # zipfile parses the whole central directory up front; refuse a huge one before that.
    at = content.rfind(_END_OF_DIRECTORY, max(0, len(content) - 65_557))
    if at < 0 or len(content) < at + 22:
        return  # not found: zipfile says what is wrong
    entries, directory_bytes = struct.unpack_from("<HI", content, at + 10)
    if entries > max_members or directory_bytes > max_members * MAX_DIRECTORY_BYTES_PER_MEMBER:
        raise ReaderError(
            "refused",
            f"archive limit: the directory lists {entries} members in {directory_bytes} bytes,"
            f" over the {max_members}-member limit",
        )


def _check_declared_sizes(
    files: list[zipfile.ZipInfo], size: int, max_total_bytes: int, max_ratio: int
) -> None:
    total = sum(info.file_size for info in files)
    if total > max_total_bytes:
        raise ReaderError(
            "refused",
            f"zip bomb: members declare {total} bytes unpacked,"
            f" over the {max_total_bytes}-byte limit",
        )
    for info in files:
        if info.file_size > RATIO_FLOOR_BYTES and info.file_size > max_ratio * info.compress_size:
            ratio = info.file_size // max(info.compress_size, 1)
            raise ReaderError(
                "refused",
                f"zip bomb: {child_name(info.filename, '?')} expands {ratio}x,"
                f" over the {max_ratio}x limit",
            )
    if total > RATIO_FLOOR_BYTES and total > max_ratio * size:
        raise ReaderError(
            "refused",
            f"zip bomb: the archive expands {total // max(size, 1)}x, over the {max_ratio}x limit",
        )


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> ChildFile:
    declared = guessed_type(name)
    if info.flag_bits & _ENCRYPTED:
        return ChildFile(
            name, declared, b"", "encrypted", "archive member is encrypted with a password"
        )
    try:
        return ChildFile(name, declared, _extract(archive, info, name))
    except ReaderError:
        raise
    except Exception as exc:
        if "overlap" in str(exc).lower():
            # Members sharing compressed data is the construction of non-recursive bombs.
            raise ReaderError("refused", f"zip bomb: {exc}"[:500]) from exc
        reason = f"archive member cannot be extracted: {type(exc).__name__}: {exc}"[:500]
        return ChildFile(name, declared, b"", "unreadable", reason)


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> bytes:
    """Never trust the declared size: one byte more is asked for, so a header that lies shows
    itself here instead of being cut at the size it claims and failing as a bad checksum."""
    probe = copy.copy(info)
    probe.file_size = info.file_size + 1
    del probe.CRC  # zipfile would check it before handing over the extra byte; done below
    data = bytearray()
    with archive.open(probe) as stream:
        while chunk := stream.read(_CHUNK):
            data += chunk
            # Declared sizes passed the limits, so staying within them keeps every budget.
            if len(data) > info.file_size:
                raise ReaderError(
                    "refused",
                    f"zip bomb: {name} inflates past the {info.file_size} bytes it declares",
                )
    if zlib.crc32(data) != info.CRC:
        raise zipfile.BadZipFile(f"bad CRC-32 for {name}")
    return bytes(data)
