# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, freethreading_compatible=False
"""The sans-IO core of sse_fast: framing, parsing and the fan-out ring.

Nothing here knows about sockets or asyncio: bytes go in, events come out (the
parser); events go in, bytes come out (framing); encoded frames go in, joined
bytes per subscriber come out (the ring).  The server and the client are built
on top of these three pieces.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcmp, memcpy

from sse_fast.errors import CursorLagging, EventTooLargeError, InvalidEventError

HEARTBEAT = b": heartbeat\n\n"

cdef bytes _BOM = b"\xef\xbb\xbf"


# --------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------

# Which bytes stop the scans below: everything else is passed over at one table
# lookup per byte.  Single-line fields (event, id, comment) refuse every control
# character (Unicode Cc: C0, DEL, C1) and the line and paragraph separators (Zl,
# Zp): in UTF-8, a byte below 0x20, 0x7F, C2 80..C2 9F, E2 80 A8 and E2 80 A9.
# Data may hold CR and LF (they cut it into data lines) but none of the other
# characters ``str.splitlines`` breaks lines at (VT, FF, FS, GS, RS, NEL, LS,
# PS): SSE parsers read on across them, readers that split like splitlines
# (httpx ``iter_lines``) would see a line of the data's choosing.
cdef unsigned char _FIELD_STOP[256]
cdef unsigned char _DATA_STOP[256]


cdef int _init_stop_tables() except -1:
    cdef int c
    for c in range(256):
        _FIELD_STOP[c] = c < 0x20 or c == 0x7F or c == 0xC2 or c == 0xE2
        _DATA_STOP[c] = (c == 0x0A or c == 0x0D or c == 0x0B or c == 0x0C
                         or 0x1C <= c <= 0x1E or c == 0xC2 or c == 0xE2)
    return 0


_init_stop_tables()


cdef inline Py_ssize_t _refused_in_field(const unsigned char* s, Py_ssize_t n) noexcept:
    # The code point of the first refused character, or -1.  ``s`` is valid
    # UTF-8 (CPython's own encoding of a str), so a lead byte's continuation
    # bytes are there to look at.
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n):
        c = s[i]
        if _FIELD_STOP[c]:
            if c == 0xC2:
                if s[i + 1] < 0xA0:
                    return s[i + 1]                     # C1: U+0080..U+009F
            elif c == 0xE2:
                if s[i + 1] == 0x80 and (s[i + 2] == 0xA8 or s[i + 2] == 0xA9):
                    return 0x2000 | (s[i + 2] & 0x3F)   # U+2028, U+2029
            else:
                return c                                # C0 and DEL
    return -1


cdef inline Py_ssize_t _splitlines_break(const unsigned char* s, Py_ssize_t i) noexcept:
    # ``s[i]`` is a byte of _DATA_STOP other than CR and LF: the code point of the
    # line break that starts there, or -1 (a C2 or E2 lead of another character).
    cdef unsigned char c = s[i]
    if c == 0xC2:
        return 0x85 if s[i + 1] == 0x85 else -1
    if c == 0xE2:
        if s[i + 1] == 0x80 and (s[i + 2] == 0xA8 or s[i + 2] == 0xA9):
            return 0x2000 | (s[i + 2] & 0x3F)
        return -1
    return c


cdef const char* _utf8(object value, str field, Py_ssize_t* size) except NULL:
    # The str's own UTF-8 buffer (the characters themselves for ASCII text), not a
    # copy: framing then allocates nothing but the frame.
    if not isinstance(value, str):
        raise InvalidEventError(field, f"must be a string, not {type(value).__name__}")
    try:
        return PyUnicode_AsUTF8AndSize(value, size)
    except UnicodeEncodeError:
        raise InvalidEventError(field, "is not encodable as UTF-8 (lone surrogate)") from None


cdef const char* _single_line_field(object value, str field, Py_ssize_t* size) except NULL:
    cdef const char* raw = _utf8(value, field, size)
    cdef Py_ssize_t found = _refused_in_field(<const unsigned char*>raw, size[0])
    if found >= 0:
        raise InvalidEventError(
            field,
            f"must not contain control characters or line/paragraph separators (found U+{found:04X})",
        )
    return raw


def check_single_line(value, field="event"):
    """Raise :class:`~sse_fast.errors.InvalidEventError` naming ``field`` unless ``value``
    may be an event type or id on the wire.

    The rule ``encode_event`` applies to ``event`` and ``id``: a str, encodable
    as UTF-8, without control characters (Unicode Cc, CR, LF and NUL among
    them) or line/paragraph separators (U+2028, U+2029).  Text from elsewhere
    that must follow it (a subscriber's event-type filter, a ``Last-Event-ID``)
    is checked here, by the same code.
    """
    cdef Py_ssize_t n = 0
    _single_line_field(value, field, &n)


def encode_event(data, event=None, id=None, retry=None):
    """Frame one event as SSE wire bytes: ``[retry:] [id:] [event:] data:... \\n\\n``.

    ``data`` is text; each of its lines (split at ``\\r\\n``, ``\\n`` or a lone
    ``\\r``) becomes one ``data:`` line, so a conforming parser gives back the
    text with line breaks normalised to ``\\n``.  The other characters
    ``str.splitlines`` breaks lines at (VT, FF, U+001C..U+001E, U+0085, U+2028,
    U+2029) are refused in ``data``: SSE reads on across them, but a reader that
    splits lines that way would see lines the data chose (JSON text has them
    escaped: see ``sse_fast.json_text``).  ``event`` and ``id`` must be
    single-line and free of control characters (Unicode Cc) and line/paragraph
    separators.  A refused value raises
    :class:`~sse_fast.errors.InvalidEventError` (a ``ValueError``) naming the
    field.  ``event`` empty or ``None`` leaves the line out (the client's
    default type ``message``); ``id=None`` leaves the id line out.
    """
    cdef Py_ssize_t dn = 0, en = -1, idn = -1
    cdef const char* d = _utf8(data, "data", &dn)
    cdef const char* e = NULL
    cdef const char* ident = NULL
    cdef bytes raw_retry = None
    if event is not None and event != "":
        e = _single_line_field(event, "event", &en)
    if id is not None:
        ident = _single_line_field(id, "id", &idn)
    if retry is not None:
        if type(retry) is bool or not isinstance(retry, int) or retry < 0:
            raise InvalidEventError("retry", "must be a non-negative integer (milliseconds)")
        try:
            raw_retry = str(int(retry)).encode("ascii")
        except ValueError:  # past the interpreter's limit on digits
            raise InvalidEventError("retry", "too large") from None
    return _frame(d, dn, e, en, ident, idn, raw_retry)


cdef bytes _frame(const char* d, Py_ssize_t dn, const char* e, Py_ssize_t en,
                  const char* ident, Py_ssize_t idn, bytes raw_retry):
    # ``e`` and ``ident`` are NULL when the field is left out.
    cdef Py_ssize_t i, lines = 1, break_bytes = 0, size, start, found
    cdef char c
    # Count the data lines and the bytes of their line breaks.
    i = 0
    while i < dn:
        c = d[i]
        if _DATA_STOP[<unsigned char>c]:
            if c == b'\n':
                lines += 1
                break_bytes += 1
            elif c == b'\r':
                lines += 1
                if i + 1 < dn and d[i + 1] == b'\n':
                    break_bytes += 2
                    i += 1
                else:
                    break_bytes += 1
            else:
                found = _splitlines_break(<const unsigned char*>d, i)
                if found >= 0:
                    raise InvalidEventError(
                        "data",
                        f"must not contain U+{found:04X}: only CR and LF may break its lines "
                        "(readers that split lines like str.splitlines would break it there)",
                    )
        i += 1
    size = dn - break_bytes + lines * 7 + 1          # "data: " + line + "\n" ... + "\n"
    if raw_retry is not None:
        size += 8 + PyBytes_GET_SIZE(raw_retry)     # "retry: " N "\n"
    if ident != NULL:
        size += 5 + idn                             # "id: " id "\n"
    if e != NULL:
        size += 8 + en                              # "event: " type "\n"

    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef char* w = PyBytes_AS_STRING(out)
    if raw_retry is not None:
        w = _put_field(w, b"retry: ", 7, PyBytes_AS_STRING(raw_retry), PyBytes_GET_SIZE(raw_retry))
    if ident != NULL:
        w = _put_field(w, b"id: ", 4, ident, idn)
    if e != NULL:
        w = _put_field(w, b"event: ", 7, e, en)
    start = 0
    i = 0
    while True:
        if i == dn or d[i] == b'\n' or d[i] == b'\r':
            memcpy(w, b"data: ", 6)
            w += 6
            memcpy(w, d + start, i - start)
            w += i - start
            w[0] = b'\n'
            w += 1
            if i == dn:
                break
            if d[i] == b'\r' and i + 1 < dn and d[i + 1] == b'\n':
                i += 1
            start = i + 1
        i += 1
    w[0] = b'\n'
    return out


cdef inline char* _put_field(char* w, const char* name, Py_ssize_t name_len,
                             const char* value, Py_ssize_t n) noexcept:
    memcpy(w, name, name_len)
    w += name_len
    memcpy(w, value, n)
    w += n
    w[0] = b'\n'
    return w + 1


def encode_comment(text):
    """Frame a comment (``: text\\n\\n``); clients ignore it, proxies see traffic."""
    cdef Py_ssize_t n = 0
    cdef const char* raw = _single_line_field(text, "comment", &n)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + 4)
    cdef char* w = PyBytes_AS_STRING(out)
    memcpy(w, b": ", 2)
    memcpy(w + 2, raw, n)
    memcpy(w + 2 + n, b"\n\n", 2)
    return out


# --------------------------------------------------------------------------
# JSON: where orjson needs help
# --------------------------------------------------------------------------

cdef inline bint _is_digit(unsigned char c) noexcept:
    return b'0' <= c <= b'9'


def may_hold_wide_integer(text):
    """Whether JSON ``text`` (bytes or str) may hold an integer outside ``[-2**63, 2**64)``.

    orjson decodes such an integer as a float (or fails past 1e308): the text
    holds one only if it has a run of 20 digits, or of 19 after a ``-``.  This
    looks for such a run without reading every byte: a probe 19 bytes ahead
    that lands on a non-digit skips all 19, so ordinary JSON costs about one
    probe per 19 bytes.  A run inside a string, a fraction or an in-range
    integer also answers ``True``: the caller then decodes exactly, at more cost.
    """
    cdef const unsigned char* s
    cdef Py_ssize_t n = 0, i = 18, j, start, end
    if type(text) is bytes:
        s = <const unsigned char*>PyBytes_AS_STRING(text)
        n = PyBytes_GET_SIZE(text)
    else:
        try:
            s = <const unsigned char*>_utf8(text, "text", &n)
        except InvalidEventError:  # not text, or a lone surrogate: not JSON orjson reads either
            return False
    while i < n:
        if not _is_digit(s[i]):
            i += 19
            continue
        j = i - 1
        while j > i - 19 and _is_digit(s[j]):
            j -= 1
        if j > i - 19:  # s[j] is not a digit: a run of 19 ends at j + 19 or later
            i = j + 19
            continue
        start = i - 18
        while start > 0 and _is_digit(s[start - 1]):
            start -= 1
        end = i + 1
        while end < n and _is_digit(s[end]):
            end += 1
        if end - start >= 20 or (start > 0 and s[start - 1] == b'-'):
            return True
        i = end + 19
    return False


cdef inline Py_ssize_t _separator_at(const unsigned char* s, Py_ssize_t i, Py_ssize_t n) noexcept:
    # The length of the UTF-8 of U+2028, U+2029 or U+0085 starting at s[i], or 0.
    cdef unsigned char c = s[i]
    if c == 0xE2:
        if i + 2 < n and s[i + 1] == 0x80 and (s[i + 2] == 0xA8 or s[i + 2] == 0xA9):
            return 3
    elif c == 0xC2:
        if i + 1 < n and s[i + 1] == 0x85:
            return 2
    return 0


def escape_line_separators(bytes raw):
    """UTF-8 JSON text with U+2028, U+2029 and U+0085 written as ``\\uXXXX`` escapes.

    JSON allows the three unescaped in strings (orjson leaves them so), but
    readers that split lines like ``str.splitlines`` break a ``data:`` line
    there.  Exact for JSON: outside strings JSON text is ASCII, inside the
    escape is the same character, and in valid UTF-8 these bytes only ever
    start a character.  Returns ``raw`` itself when it holds none of them.
    """
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw), i = 0, k, grow = 0
    while i < n:
        k = _separator_at(s, i, n)
        if k:
            grow += 6 - k
            i += k
        else:
            i += 1
    if grow == 0:
        return raw
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + grow)
    cdef char* w = PyBytes_AS_STRING(out)
    i = 0
    while i < n:
        k = _separator_at(s, i, n)
        if k == 0:
            w[0] = <char>s[i]
            w += 1
            i += 1
            continue
        if k == 2:
            memcpy(w, b"\\u0085", 6)
        elif s[i + 2] == 0xA8:
            memcpy(w, b"\\u2028", 6)
        else:
            memcpy(w, b"\\u2029", 6)
        w += 6
        i += k
    return out


# --------------------------------------------------------------------------
# Parsing (WHATWG HTML, "Parsing an event stream")
# --------------------------------------------------------------------------

cdef object _json_loads = None


cdef class ServerSentEvent:
    """One dispatched event, as a browser's ``MessageEvent`` would carry it.

    ``id`` is the stream's last event id at dispatch (it persists across events,
    as the spec says); ``retry`` is the ``retry:`` value seen in this event's
    block, if any.
    """

    cdef readonly str event
    cdef readonly str data
    cdef readonly str id
    cdef readonly object retry

    def __init__(self, data="", event="message", id="", retry=None):
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry

    def json(self):
        """The data decoded as JSON (the push API sends JSON text), integers of any size exactly."""
        global _json_loads
        if _json_loads is None:  # imported late: sse_fast.json_text builds on this module
            from sse_fast.json_text import loads
            _json_loads = loads
        return _json_loads(self.data)

    def __repr__(self):
        return f"ServerSentEvent(event={self.event!r}, data={self.data!r}, id={self.id!r}, retry={self.retry!r})"

    def __eq__(self, other):
        if not isinstance(other, ServerSentEvent):
            return NotImplemented
        cdef ServerSentEvent o = other
        return (self.event == o.event and self.data == o.data and self.id == o.id
                and self.retry == o.retry)

    def __hash__(self):
        return hash((self.event, self.data, self.id, self.retry))


cdef class EventParser:
    """Incremental, spec-exact SSE parser: feed bytes, get dispatched events.

    Chunks may be split anywhere, including between ``\\r`` and ``\\n`` and
    inside a multi-byte UTF-8 character: lines are cut on bytes (CR and LF never
    occur inside a UTF-8 sequence) and decoded only once complete, with invalid
    sequences replaced by U+FFFD as the spec's decoder does.

    ``max_event_size`` (bytes, 0 for no limit) bounds what one event may hold
    in memory — its data lines plus the line still unterminated — so that a
    hostile or broken server cannot grow a client without end: past it,
    ``feed`` raises :class:`~sse_fast.errors.EventTooLargeError`.
    """

    cdef bytearray _partial          # bytes of an unterminated line
    cdef Py_ssize_t _max_event_size  # 0: unbounded
    cdef Py_ssize_t _block_bytes     # data bytes of the current block
    cdef bint _bom_checked
    cdef bint _skip_lf               # previous chunk ended with CR
    cdef list _data_lines            # decoded data values of the current block
    cdef str _event_type             # value of the last event: field, or None
    cdef bytes _type_raw             # the last event type decoded, and its text:
    cdef str _type_text              # streams repeat a few types, decode each once
    cdef str _id_buffer              # "last event ID buffer"
    cdef str _last_event_id          # "last event ID string", set at dispatch
    cdef object _block_retry
    cdef readonly object retry
    cdef readonly Py_ssize_t comments
    cdef list _out

    def __init__(self, str last_event_id="", Py_ssize_t max_event_size=0):
        if max_event_size < 0:
            raise ValueError("max_event_size: must be 0 (no limit) or a positive number of bytes")
        self._max_event_size = max_event_size
        self._block_bytes = 0
        self._partial = bytearray()
        self._bom_checked = False
        self._skip_lf = False
        self._data_lines = []
        self._event_type = None
        self._type_raw = None
        self._type_text = None
        self._id_buffer = last_event_id
        self._last_event_id = last_event_id
        self._block_retry = None
        self.retry = None
        self.comments = 0
        self._out = []

    @property
    def last_event_id(self):
        """What an EventSource would send as ``Last-Event-ID`` when reconnecting."""
        return self._last_event_id

    def feed(self, data):
        """Parse a chunk; return the events it completed (possibly none)."""
        cdef bytes chunk = data if type(data) is bytes else bytes(data)
        cdef Py_ssize_t n, i, end, next_lf = -1, next_cr = -1
        cdef const char* p
        cdef const char* q
        if not self._bom_checked:
            if self._partial:
                chunk = bytes(self._partial) + chunk
                del self._partial[:]
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._partial += chunk
                return []
            self._bom_checked = True
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        p = PyBytes_AS_STRING(chunk)
        n = PyBytes_GET_SIZE(chunk)
        i = 0
        if self._skip_lf and n > 0:
            self._skip_lf = False
            if p[0] == b'\n':
                i = 1
        while i < n:
            # The line ends at the next LF or CR.  Each memchr result is kept until
            # passed, so a chunk is scanned at most once for each (even with lines
            # that all end in a lone CR).
            if next_lf < i:
                q = <const char*>memchr(p + i, b'\n', n - i)
                next_lf = q - p if q != NULL else n
            if next_cr < i:
                q = <const char*>memchr(p + i, b'\r', n - i)
                next_cr = q - p if q != NULL else n
            end = next_lf if next_lf < next_cr else next_cr
            if end == n:
                break
            if self._partial:
                self._partial += p[i:end]
                self._line_from_partial()
            else:
                self._line(p + i, end - i)
            if p[end] == b'\r':
                if end + 1 < n:
                    if p[end + 1] == b'\n':
                        end += 1
                else:
                    self._skip_lf = True
            i = end + 1
        if i < n:
            self._partial += p[i:n]
            if self._max_event_size and len(self._partial) + self._block_bytes > self._max_event_size:
                self._too_large()
        if not self._out:
            return []
        out = self._out
        self._out = []
        return out

    cdef int _too_large(self) except -1:
        cdef Py_ssize_t size = len(self._partial) + self._block_bytes
        del self._partial[:]
        self._data_lines = []
        self._block_bytes = 0
        raise EventTooLargeError(size, self._max_event_size)

    cdef int _line_from_partial(self) except -1:
        cdef bytes line = bytes(self._partial)
        del self._partial[:]
        return self._line(PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line))

    cdef int _line(self, const char* s, Py_ssize_t n) except -1:
        cdef const char* colon
        cdef const char* v
        cdef Py_ssize_t flen, vlen, k
        if n == 0:
            self._dispatch()
            return 0
        if s[0] == b':':
            self.comments += 1
            return 0
        colon = <const char*>memchr(s, b':', n)
        if colon != NULL:
            flen = colon - s
            v = colon + 1
            vlen = n - flen - 1
            if vlen > 0 and v[0] == b' ':
                v += 1
                vlen -= 1
        else:
            flen = n
            v = s + n
            vlen = 0
        if flen == 4 and memcmp(s, b"data", 4) == 0:
            # Decoding line by line gives what decoding the joined lines would:
            # the LF between them is ASCII, so no UTF-8 sequence spans it.
            self._data_lines.append(PyUnicode_DecodeUTF8(v, vlen, "replace"))
            self._block_bytes += vlen + 1
            if self._max_event_size and self._block_bytes > self._max_event_size:
                self._too_large()
        elif flen == 5 and memcmp(s, b"event", 5) == 0:
            if (self._type_raw is None or PyBytes_GET_SIZE(self._type_raw) != vlen
                    or memcmp(PyBytes_AS_STRING(self._type_raw), v, vlen) != 0):
                self._type_raw = PyBytes_FromStringAndSize(v, vlen)
                self._type_text = PyUnicode_DecodeUTF8(v, vlen, "replace")
            self._event_type = self._type_text
        elif flen == 2 and memcmp(s, b"id", 2) == 0:
            if memchr(v, 0, vlen) == NULL:
                self._id_buffer = PyUnicode_DecodeUTF8(v, vlen, "replace")
        elif flen == 5 and memcmp(s, b"retry", 5) == 0:
            if vlen == 0:
                return 0
            for k in range(vlen):
                if v[k] < b'0' or v[k] > b'9':
                    return 0
            self.retry = int(PyBytes_FromStringAndSize(v, vlen))
            self._block_retry = self.retry
        return 0

    cdef int _dispatch(self) except -1:
        cdef ServerSentEvent ev
        cdef list lines = self._data_lines
        self._last_event_id = self._id_buffer
        self._block_bytes = 0
        if not lines:
            self._event_type = None
            self._block_retry = None
            return 0
        ev = ServerSentEvent.__new__(ServerSentEvent)
        ev.data = lines[0] if len(lines) == 1 else "\n".join(lines)
        ev.event = self._event_type if self._event_type else "message"
        ev.id = self._last_event_id
        ev.retry = self._block_retry
        self._out.append(ev)
        self._data_lines = []
        self._event_type = None
        self._block_retry = None
        return 0


# --------------------------------------------------------------------------
# Fan-out ring
# --------------------------------------------------------------------------

cdef class FanoutRing:
    """A bounded ring of encoded frames that many subscribers read through cursors.

    Each appended frame gets the next *position* (0, 1, 2, ...).  A subscriber
    keeps the position of the next frame it has not written yet; ``take`` joins
    everything from there to the head into one bytes object, so a wake-up costs
    one write however many events are pending.  The ring keeps at most
    ``max_frames`` frames and ``max_bytes`` bytes; a cursor older than the oldest
    frame kept is *lagging* (:class:`~sse_fast.errors.CursorLagging`): that
    subscriber missed frames and must resume from a store instead.

    Frames carry their event type (for subscribers that filter by type) and the
    event's sequence number (so a subscriber that just replayed history up to
    ``seq`` can skip what it already has).
    """

    cdef Py_ssize_t _max_frames
    cdef Py_ssize_t _max_bytes
    cdef Py_ssize_t _nbytes
    cdef long long _head
    cdef long long _tail
    cdef list _frames                # the bytes objects: they own the memory _data points into
    cdef list _types
    cdef long long* _seqs
    cdef const char** _data          # per slot: the frame's bytes, its size, and the
    cdef Py_ssize_t* _sizes          # ring's running byte count before it, so an
    cdef long long* _starts          # unfiltered take sizes its result in O(1)
    cdef long long _appended         # bytes appended since creation

    def __cinit__(self, Py_ssize_t max_frames=4096, Py_ssize_t max_bytes=32 * 1024 * 1024):
        if max_frames < 1:
            raise ValueError("max_frames: must be at least 1")
        if max_bytes < 1:
            raise ValueError("max_bytes: must be at least 1")
        self._seqs = <long long*>malloc(max_frames * sizeof(long long))
        self._data = <const char**>malloc(max_frames * sizeof(char*))
        self._sizes = <Py_ssize_t*>malloc(max_frames * sizeof(Py_ssize_t))
        self._starts = <long long*>malloc(max_frames * sizeof(long long))
        if self._seqs == NULL or self._data == NULL or self._sizes == NULL or self._starts == NULL:
            raise MemoryError()
        self._appended = 0
        self._max_frames = max_frames
        self._max_bytes = max_bytes
        self._nbytes = 0
        self._head = 0
        self._tail = 0
        self._frames = [None] * max_frames
        self._types = [None] * max_frames

    def __dealloc__(self):
        free(self._seqs)
        free(self._data)
        free(self._sizes)
        free(self._starts)

    @property
    def head(self):
        """Position the next appended frame will get (== a new subscriber's cursor)."""
        return self._head

    @property
    def tail(self):
        """Position of the oldest frame still kept."""
        return self._tail

    @property
    def max_frames(self):
        return self._max_frames

    @property
    def max_bytes(self):
        return self._max_bytes

    @property
    def nbytes(self):
        """Bytes of the frames currently kept."""
        return self._nbytes

    def __len__(self):
        return self._head - self._tail

    cpdef long long append(self, bytes frame, str event_type=None, long long seq=0) except -1:
        """Add a frame; evict the oldest while over capacity; return its position."""
        cdef Py_ssize_t size = PyBytes_GET_SIZE(frame)
        cdef Py_ssize_t slot
        if size > self._max_bytes:
            raise ValueError(f"frame: {size} bytes exceed the ring's max_bytes ({self._max_bytes})")
        while self._head - self._tail >= self._max_frames or self._nbytes + size > self._max_bytes:
            self._evict_oldest()
        slot = self._head % self._max_frames
        self._frames[slot] = frame
        self._types[slot] = event_type
        self._seqs[slot] = seq
        self._data[slot] = PyBytes_AS_STRING(frame)
        self._sizes[slot] = size
        self._starts[slot] = self._appended
        self._appended += size
        self._nbytes += size
        self._head += 1
        return self._head - 1

    cdef void _evict_oldest(self):
        cdef Py_ssize_t slot = self._tail % self._max_frames
        self._nbytes -= self._sizes[slot]
        self._frames[slot] = None
        self._types[slot] = None
        self._tail += 1

    cpdef bint is_lagging(self, long long cursor):
        return cursor < self._tail

    cpdef tuple take(self, long long cursor, long long until=-1, str event_type=None,
                     long long after_seq=0):
        """Join the frames from ``cursor`` up to ``until`` (default: the head).

        Only frames of ``event_type`` (when given) and with ``seq > after_seq``
        (or seq 0: a frame in no history) are included.  Returns ``(joined_bytes, new_cursor)``; raises
        :class:`CursorLagging` when ``cursor`` is older than the oldest frame.
        """
        cdef tuple result = self.collect(cursor, until, event_type, after_seq)
        return (result[0], result[1])

    cpdef tuple collect(self, long long cursor, long long until=-1, str event_type=None,
                        long long after_seq=0):
        """Like :meth:`take`, and also count the frames joined: ``(bytes, cursor, count)``."""
        cdef long long end = self._head if until < 0 or until > self._head else until
        cdef long long pos
        cdef Py_ssize_t slot, first_slot, match_slot = -1, total = 0, count = 0
        cdef bytes out
        cdef char* w
        cdef bint filtered = event_type is not None or after_seq > 0
        if cursor < self._tail:
            raise CursorLagging(cursor, self._tail)
        if cursor >= end:
            return (b"", cursor, 0)
        # The slot steps with the position: one division per call, not one per
        # frame (a division costs more than copying a small frame).
        first_slot = cursor % self._max_frames
        if not filtered:
            count = end - cursor
            match_slot = first_slot
            total = ((self._appended if end == self._head else self._starts[end % self._max_frames])
                     - self._starts[first_slot])
        else:
            # First pass: which frames, and the size of the result.
            slot = first_slot
            pos = cursor
            while pos < end:
                if self._wanted(slot, event_type, after_seq):
                    total += self._sizes[slot]
                    count += 1
                    if match_slot < 0:
                        match_slot = slot
                pos += 1
                slot += 1
                if slot == self._max_frames:
                    slot = 0
        if count == 0:
            return (b"", end, 0)
        if count == 1:
            return (self._frames[match_slot], end, 1)      # the frame itself: no copy
        out = PyBytes_FromStringAndSize(NULL, total)
        w = PyBytes_AS_STRING(out)
        slot = first_slot
        pos = cursor
        while pos < end:
            if not filtered or self._wanted(slot, event_type, after_seq):
                memcpy(w, self._data[slot], self._sizes[slot])
                w += self._sizes[slot]
            pos += 1
            slot += 1
            if slot == self._max_frames:
                slot = 0
        return (out, end, count)

    cdef inline bint _wanted(self, Py_ssize_t slot, str event_type, long long after_seq):
        if 0 < self._seqs[slot] <= after_seq:  # seq 0: in no history, never "already replayed"
            return False
        if event_type is not None and self._types[slot] != event_type:
            return False
        return True
