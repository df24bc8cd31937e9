"""A file sent in a multipart form, read in place from the buffered body: no second copy of it.

Werkzeug's form parser copies each file part out of the body, so a 198 MB video sent as a form was held
twice while it was parsed (+497 MB for the worker against +297 MB for the same video as the raw body,
`python -m bench.video_bench`). The body is already in memory whole (`webapp.body_limits`), so the part
is found by its boundaries and read through a view of the body's bytes. Anything this reading does not
plainly understand is left to Werkzeug, whose errors the API already gives.
"""

from __future__ import annotations

import io
import re

from werkzeug.http import parse_options_header

HEADERS_END = re.compile(rb"\r\n\r\n")
# a part's headers: a few lines; more is not a form this reading should trust
MAX_HEADERS_BYTES = 16 * 1024


class BufferReader(io.RawIOBase):
    """A read-only, seekable binary file over a buffer (a `memoryview` of the body): what PyAV reads."""

    def __init__(self, view: memoryview):
        self._view = view
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._view[self._position : self._position + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        if not self.closed:
            self._view.release()  # the body's buffer may then be freed, or written again
        super().close()


def file_in_form(body: io.BytesIO, content_type: str, field: str, max_parts: int) -> BufferReader | None:
    """The one part named `field` of the multipart form `body`, as a reader over the body's own bytes.

    None when the form is not one this reading is sure of: no boundary, a delimiter or header block out of
    place, more than `max_parts` parts, no part named `field` or several, a `field` part with no filename,
    or a part's headers Werkzeug may read otherwise (`_part_name`). Werkzeug then parses it (and refuses
    it with the right error).
    """
    boundary = parse_options_header(content_type)[1].get("boundary", "")
    if not boundary or len(boundary) > 70:  # RFC 2046: 1 to 70 characters
        return None
    try:
        delimiter = b"--" + boundary.encode("ascii")
    except UnicodeEncodeError:
        return None
    view = body.getbuffer()
    found = _find_part(view, delimiter, field, max_parts)
    if found is None:
        view.release()
        return None
    start, end = found
    part = view[start:end]
    view.release()
    return BufferReader(part)


def _find_part(view: memoryview, delimiter: bytes, field: str, max_parts: int) -> tuple[int, int] | None:
    """(start, end) of the data of the one part named `field`, or None (see `file_in_form`)."""
    # a delimiter ends its line, or the form ("--"): "\r\n--boundaryX" inside a file is data, as for Werkzeug
    next_delimiter = re.compile(re.escape(b"\r\n" + delimiter) + rb"(?=[ \t]*\r\n|--)")
    if view[: len(delimiter)] == delimiter:  # no preamble: the body starts with the first delimiter
        position = len(delimiter)
    else:
        first = next_delimiter.search(view)
        if first is None:
            return None
        position = first.end()
    found, parts = None, 0
    while True:
        after = bytes(view[position : position + 2])
        if after == b"--":  # the closing delimiter
            return found
        if after != b"\r\n":
            return None
        parts += 1
        if parts > max_parts:
            return None
        headers_end = HEADERS_END.search(view, position, position + 2 + MAX_HEADERS_BYTES)
        if headers_end is None:
            return None
        named = _part_name(bytes(view[position + 2 : headers_end.start()]))
        if named is UNSURE:
            return None
        name, has_filename = named
        data_start = headers_end.end()
        ending = next_delimiter.search(view, data_start)
        if ending is None:
            return None
        if name == field:
            # two parts of that name: Werkzeug decides which counts; no filename: Werkzeug takes it for a
            # text field, not a file
            if found is not None or not has_filename:
                return None
            if _bare_line_end_delimiter(view, delimiter, data_start, ending.start()):
                return None
            found = (data_start, ending.start())
        position = ending.end()


def _bare_line_end_delimiter(view: memoryview, delimiter: bytes, start: int, end: int) -> bool:
    """Whether the data between `start` and `end` holds a delimiter with a bare LF or CR for a line end:
    one to Werkzeug. Found by the delimiter alone, a literal (a pattern that starts with a class of
    characters took 1.5 s over a 198 MB video, against 0.2 s for the whole form)."""
    for hit in re.compile(re.escape(delimiter)).finditer(view, start, end):
        before = view[hit.start() - 1 : hit.start()].tobytes()
        after = view[hit.end() : hit.end() + 72].tobytes().lstrip(b" \t")
        if before in (b"\r", b"\n") and (after[:1] in (b"\r", b"\n") or after[:2] == b"--"):
            return True
    return False


# a part's headers this reading is not sure of (see `_part_name`)
UNSURE = object()


def _part_name(headers: bytes):
    """The `name` of a part's Content-Disposition, `filename` and all: `(name, has_filename)`; `UNSURE` for
    headers Werkzeug may read otherwise: folded lines, a bare CR or LF, no Content-Disposition, or one
    that is not form-data (Werkzeug does not check the type). A part read one way here and another way
    there could have this reading analyse another part than Werkzeug would."""
    bare = headers.replace(b"\r\n", b"")
    if b"\r" in bare or b"\n" in bare:
        return UNSURE
    disposition = None
    for line in headers.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            return UNSURE
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-disposition":
            if disposition is not None:
                return UNSURE
            disposition = value
    if disposition is None:
        return UNSURE
    kind, options = parse_options_header(disposition.decode("latin-1").strip())
    if kind != "form-data":
        return UNSURE
    return options.get("name"), "filename" in options
