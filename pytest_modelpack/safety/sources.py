"""Bounded, seekable views of the golden's bytes for the interpreter.

:class:`Window` bounds every read to one stream (a nested payload can never read past its own
end); :class:`Latin1Reader` serves the bytes a protocol 0-2 pickle stores as latin-1 text,
decoded lazily so memory stays bounded for any payload size.
"""

from __future__ import annotations

import codecs
import mmap
from typing import IO

from pytest_modelpack.safety.refs import ScanError

_CHUNK = 1 << 20


class Window:
    """A read-only, seekable view of bytes ``[start, end)`` of a seekable binary file.

    Nested pickles live inside the outer file; a window bounds every read to the payload so a
    nested stream can never read past its own end. It is also file-like enough for ``zipfile``.
    """

    def __init__(
        self, f: IO[bytes] | mmap.mmap | Window | Latin1Reader, start: int, end: int
    ) -> None:
        self._f = f
        self._start = start
        self._size = max(0, end - start)
        self._pos = 0
        f.seek(start)

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self._pos
        elif whence == 2:
            pos += self._size
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        self._f.seek(self._start + min(pos, self._size))
        return pos

    def remaining(self) -> int:
        return max(0, self._size - self._pos)

    def origin(self) -> tuple[object, int]:
        """The file under every window and the absolute offset of the current position in it
        (a :class:`Latin1Reader` below a window makes the root that reader: no offsets there)."""
        f: object = self._f
        offset = self._start + min(self._pos, self._size)
        while isinstance(f, Window):
            offset += f._start
            f = f._f
        return f, offset

    def skip(self, n: int) -> bool:
        """Move ``n`` bytes forward without reading them; False when that passes the end."""
        if self._pos + n > self._size:
            return False
        self.seek(self._pos + n)
        return True

    def read(self, n: int | None = -1) -> bytes:
        left = self._size - self._pos
        if left <= 0:
            return b""
        if n is None or n < 0 or n > left:
            n = left
        data = self._f.read(n)
        self._pos += len(data)
        return data

    def readline(self, limit: int | None = -1) -> bytes:
        left = self._size - self._pos
        if left <= 0:
            return b""
        if limit is None or limit < 0 or limit > left:
            limit = left
        f = self._f
        if isinstance(f, mmap.mmap):  # its readline takes no limit
            at = f.tell()
            nl = f.find(b"\n", at, at + limit)
            data = f.read(nl + 1 - at if nl >= 0 else limit)
        else:
            data = f.readline(limit)
        self._pos += len(data)
        return data


class Latin1Reader:
    """The bytes ``_codecs.encode(text, 'latin1')`` would produce, decoded lazily from the stream.

    For a protocol 0-2 pickle the nested torch stream is stored as text (UTF-8 for BINUNICODE,
    raw-unicode-escape for UNICODE). Only the first few small pickles of it are ever scanned, so
    decoding on demand keeps memory bounded for any payload size. Seeking backwards restarts the
    decoder; ``seek(0, 2)`` decodes once to learn the size (only zipfile does that).
    """

    def __init__(self, raw: Window, encoding: str) -> None:
        self._raw = raw
        self._encoding = encoding
        self._size: int | None = None
        self._restart()

    def _restart(self) -> None:
        self._raw.seek(0)
        errors = "surrogatepass" if self._encoding == "utf-8" else "strict"
        self._decoder = codecs.getincrementaldecoder(self._encoding)(errors)
        self._buf = bytearray()
        self._pos = 0  # decoded bytes handed out so far (position of _buf[0])
        self._eof = False

    def _fill(self, want: int, stop_at_newline: bool = False) -> None:
        while len(self._buf) < want and not self._eof:
            if stop_at_newline and b"\n" in self._buf:
                return
            chunk = self._raw.read(64 * 1024)
            try:
                text = self._decoder.decode(chunk, final=not chunk)
                self._buf += text.encode("latin-1")
            except UnicodeError as exc:
                raise ScanError(f"storage payload text is not latin-1 bytes: {exc}") from None
            if not chunk:
                self._eof = True

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            out = bytearray()
            while True:
                piece = self.read(_CHUNK)
                if not piece:
                    return bytes(out)
                out += piece
        self._fill(n)
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._pos += len(data)
        return data

    def readline(self, limit: int | None = -1) -> bytes:
        want = _CHUNK if limit is None or limit < 0 else limit
        while True:
            self._fill(want, stop_at_newline=True)
            nl = self._buf.find(b"\n", 0, want)
            if nl >= 0:
                return self.read(nl + 1)
            if len(self._buf) >= want or self._eof:
                return self.read(want)
            if limit is None or limit < 0:
                want += _CHUNK

    def remaining(self) -> int | None:
        return None  # unknown without decoding: reads that come back short are truncation

    def skip(self, n: int) -> bool:
        while n > 0:
            piece = self.read(min(n, _CHUNK))
            if not piece:
                return False
            n -= len(piece)
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self._pos
        elif whence == 2:
            if self._size is None:
                self.seek(0)
                while self.read(_CHUNK):
                    pass
                self._size = self._pos
            pos += self._size
        if pos < 0:
            raise ValueError("negative seek position")
        if pos < self._pos:
            self._restart()
        self.skip(pos - self._pos)
        return self._pos


Source = Window | Latin1Reader
