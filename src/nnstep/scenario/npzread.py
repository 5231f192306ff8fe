"""Reading the .npz files numpy.savez writes, without importing zipfile.

`import zipfile` costs ~8 ms here (it imports pathlib, which imports urllib.parse and ipaddress),
and `nnstep run` is to start within 60 ms of `import numpy` (docs/commands.md, "Performance"). A .npz as numpy writes it is
the simplest kind of zip: one disk, no encryption, each member stored or deflated. :class:`SimpleZip`
reads exactly that, with the interface of ``zipfile.ZipFile`` the loader uses (``namelist``,
``getinfo(name).file_size``, ``open``), and checks every member's CRC-32 and size. Anything else
(zip64 sizes or offsets, a multi-disk or encrypted archive, another compression, a name that is
not ASCII, or any inconsistency at all) raises :class:`NotSimple`, and the caller opens the file
with zipfile, which reads every valid zip and names what is wrong with a broken one.
"""
from __future__ import annotations

import io
import struct
import sys

_EOCD = struct.Struct("<4s4H2LH")             # end of central directory, 22 bytes
_CDIR = struct.Struct("<4s4B4HL2L5H2L")       # central directory entry, 46 bytes
_LOCAL = struct.Struct("<4s2B4HL2L2H")        # local file header, 30 bytes
_MAX_COMMENT = 65535
_MAX_MEMBER = 64 << 20     # larger members are left to zipfile, which streams them: the loader checks
                           # an array's header before it reads the array


class NotSimple(Exception):
    """Not a zip SimpleZip reads: open it with zipfile instead."""


class _Closing:
    """``with`` closes it (as zipfile.ZipFile does)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Info:
    __slots__ = ("filename", "file_size", "compress_size", "compress_type", "crc", "header_offset")

    def __init__(self, filename, file_size, compress_size, compress_type, crc, header_offset):
        self.filename, self.file_size, self.compress_size = filename, file_size, compress_size
        self.compress_type, self.crc, self.header_offset = compress_type, crc, header_offset


class SimpleZip(_Closing):
    def __init__(self, path: str):
        self._last: tuple[str, bytes] | None = None
        self._fh = open(path, "rb")
        try:
            self._infos = self._read_directory()
        except BaseException:
            self._fh.close()
            raise

    def _read_directory(self) -> dict[str, _Info]:
        fh = self._fh
        size = fh.seek(0, 2)
        if size < _EOCD.size:
            raise NotSimple("too short")
        tail_len = min(size, _EOCD.size + _MAX_COMMENT)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + _EOCD.size > len(tail):
            raise NotSimple("no end of central directory")
        _, disk, cd_disk, n_here, n_total, cd_size, cd_offset, comment_len = _EOCD.unpack_from(tail, at)
        if at + _EOCD.size + comment_len != len(tail):
            raise NotSimple("trailing bytes after the archive comment")
        if disk or cd_disk or n_here != n_total or 0xFFFF in (n_here, n_total) or 0xFFFFFFFF in (cd_size, cd_offset):
            raise NotSimple("multi-disk or zip64")
        eocd_pos = size - tail_len + at
        if at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":
            raise NotSimple("zip64 locator")
        if cd_offset + cd_size != eocd_pos:
            raise NotSimple("central directory not just before its end record")
        fh.seek(cd_offset)
        cd = fh.read(cd_size)
        if len(cd) != cd_size:
            raise NotSimple("short central directory")
        infos: dict[str, _Info] = {}
        pos = 0
        for _ in range(n_total):
            if pos + _CDIR.size > len(cd):
                raise NotSimple("short entry")
            e = _CDIR.unpack_from(cd, pos)
            (sig, _cv, _cs, _ev, _r, flags, method, _t, _d, crc, csize, fsize,
             name_len, extra_len, comment_len, disk_start, _ia, _ea, offset) = e
            if sig != b"PK\x01\x02":
                raise NotSimple("bad entry signature")
            if flags & 0x1 or method not in (0, 8) or disk_start:
                raise NotSimple("encrypted, compressed other than by deflate, or on another disk")
            if 0xFFFFFFFF in (csize, fsize, offset):
                raise NotSimple("zip64 entry")
            raw = cd[pos + _CDIR.size:pos + _CDIR.size + name_len]
            if len(raw) != name_len or not raw.isascii():
                raise NotSimple("name not ASCII")
            name = raw.decode("ascii")
            if name in infos:
                raise NotSimple("a name twice")
            infos[name] = _Info(name, fsize, csize, method, crc, offset)
            pos += _CDIR.size + name_len + extra_len + comment_len
        if pos != len(cd):
            raise NotSimple("central directory size disagrees with its entries")
        return infos

    def namelist(self) -> list[str]:
        return list(self._infos)

    def getinfo(self, name: str) -> _Info:
        return self._infos[name]

    def read(self, name: str) -> bytes:
        import zlib

        if self._last is not None and self._last[0] == name:
            return self._last[1]
        info = self._infos[name]
        if info.file_size > _MAX_MEMBER or info.compress_size > _MAX_MEMBER:
            raise NotSimple("a member larger than any array the loader accepts")
        fh = self._fh
        fh.seek(info.header_offset)
        head = fh.read(_LOCAL.size)
        if len(head) != _LOCAL.size:
            raise NotSimple("short local header")
        sig, *_, name_len, extra_len = _LOCAL.unpack(head)
        if sig != b"PK\x03\x04":
            raise NotSimple("bad local header")
        if fh.read(name_len) != name.encode("ascii"):
            raise NotSimple("local name differs from the directory's")
        fh.seek(extra_len, 1)
        data = fh.read(info.compress_size)
        if len(data) != info.compress_size:
            raise NotSimple("member cut short")
        if info.compress_type == 8:
            d = zlib.decompressobj(-15)
            try:
                data = d.decompress(data, info.file_size + 1)
            except zlib.error:
                raise NotSimple("bad deflate data") from None
            if not d.eof:
                raise NotSimple("deflate stream longer than its size")
        if len(data) != info.file_size or zlib.crc32(data) != info.crc:
            raise NotSimple("size or CRC-32 differs")
        self._last = (name, data)
        return data

    def open(self, name: str) -> io.BytesIO:
        return io.BytesIO(self.read(name))

    def close(self) -> None:
        self._fh.close()


class Archive(_Closing):
    """A .npz open for reading: a :class:`SimpleZip` while the file is one, else (from the first
    :class:`NotSimple` on) a ``zipfile.ZipFile``. Opening raises what ``zipfile.ZipFile`` raises for
    a file that is no zip archive (see :func:`zip_errors`)."""

    def __init__(self, path: str):
        self._path = path
        try:
            self._z = SimpleZip(path)
        except NotSimple:
            self._z = _zipfile(path)

    def _do(self, method: str, *args):
        try:
            return getattr(self._z, method)(*args)
        except NotSimple:
            self._z.close()
            self._z = _zipfile(self._path)
            return getattr(self._z, method)(*args)

    def namelist(self) -> list[str]:
        return self._do("namelist")

    def getinfo(self, name: str):
        return self._do("getinfo", name)

    def open(self, name: str):
        return self._do("open", name)

    def close(self) -> None:
        self._z.close()


def _zipfile(path: str):
    import zipfile
    return zipfile.ZipFile(path)


def zip_errors() -> tuple[type[BaseException], ...]:
    """What zipfile raises for a damaged archive, where zipfile was imported (so could have raised
    it): besides its own errors, a flipped bit can name an unknown compression method
    (NotImplementedError), set the encryption flag (RuntimeError: a password is required) or break
    the deflate stream (zlib.error)."""
    z = sys.modules.get("zipfile")
    if z is None:
        return ()
    import zlib
    return (z.BadZipFile, z.LargeZipFile, NotImplementedError, RuntimeError, zlib.error)
