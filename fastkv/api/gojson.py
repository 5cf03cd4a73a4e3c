"""Go's encoding/json, encoding/base64 and strconv.Quote, as far as a client can see them.

etcd's JSON gateway answers malformed input with the error texts of Go's
decoders, and clients (and people) match on them. The gateway decodes with
orjson first; when that fails or a value looks off, this port of Go's scanner
runs instead so that the error text is exactly Go's.
"""
from __future__ import annotations

import contextlib
import re
import sys


# ---------------------------------------------------------------------------
# Go's encoding/json, encoding/base64 and strconv.Quote, as far as a client can
# observe them. A parsed value is a node (kind, start, end, value): kind is
# "o" object (dict name -> node; the last duplicate wins as in a Go map), "a"
# array (list of nodes), "s" string (the Go-decoded str), "n" number (its
# literal text), "t"/"f" true/false, "z" null; start/end delimit its raw text.
# ---------------------------------------------------------------------------


class GoJSONError(ValueError):
    """A decoding error whose str() is exactly the text Go prints."""


class GoEOF(Exception):
    """The input ended inside a value."""


_WS = frozenset(b" \t\r\n")
_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")

# How Go names a JSON value's kind in an UnmarshalTypeError.
KIND_NAMES = {"o": "object", "a": "array", "s": "string", "n": "number", "t": "bool", "f": "bool"}


def quote_char(c: int) -> str:
    """Go's encoding/json quoteChar: how a byte is shown in a syntax error."""
    if c == 0x27:
        return "'\\''"
    if c == 0x22:
        return "'\"'"
    s = go_quote(chr(c))
    return "'" + s[1:-1] + "'"


def _syntax(c: int, context: str) -> GoJSONError:
    return GoJSONError(f"invalid character {quote_char(c)} {context}")


def go_quote(s) -> str:
    """Go's strconv.Quote (what fmt's %q prints) for a str or raw bytes."""
    if isinstance(s, (bytes, bytearray)):
        text = bytes(s).decode("utf-8", "surrogateescape")
    else:
        text = s
    out = ['"']
    for ch in text:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # an invalid UTF-8 byte kept by surrogateescape
            out.append("\\x%02x" % (o - 0xDC00))
        elif ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n",
                        "\r": "\\r", "\t": "\\t", "\v": "\\v"}[ch])
        elif o < 0x20 or o == 0x7F:
            out.append("\\x%02x" % o)
        elif o < 0x10000:
            out.append("\\u%04x" % o)
        else:
            out.append("\\U%08x" % o)
    out.append('"')
    return "".join(out)


_GO_STR_ESC = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
               "\u2028": "\\u2028", "\u2029": "\\u2029"}


# Everything Go's encoder does not copy as it is: quotes, backslashes, controls, the
# HTML-unsafe <, >, &, the JavaScript line separators, and lone surrogates (Go
# replaces invalid UTF-8 with U+FFFD).
_GO_NEEDS_ESC = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')


def _go_escape(m) -> str:
    ch = m.group()
    e = _GO_STR_ESC.get(ch)
    if e is not None:
        return e
    if ord(ch) < 0x20:
        return "\\u%04x" % ord(ch)
    return "\ufffd"


def go_json_string(s: str) -> str:
    """A str as Go's json.Marshal writes it (HTML-safe escapes, \\u00XX controls)."""
    if _GO_NEEDS_ESC.search(s) is None:
        return '"' + s + '"'
    return '"' + _GO_NEEDS_ESC.sub(_go_escape, s) + '"'


class _Parser:
    __slots__ = ("d", "n")

    def __init__(self, data: bytes):
        self.d = data
        self.n = len(data)

    def ws(self, i: int) -> int:
        d, n = self.d, self.n
        while i < n and d[i] in _WS:
            i += 1
        return i

    def value(self, i: int):
        """Parse a value starting at i (whitespace already skipped)."""
        d, n = self.d, self.n
        if i >= n:
            raise GoEOF()
        c = d[i]
        if c == 0x7B:  # {
            return self.obj(i)
        if c == 0x5B:  # [
            return self.arr(i)
        if c == 0x22:  # "
            s, j = self.string(i)
            return ("s", i, j, s), j
        if c == 0x2D or c in _DIGITS:
            j = self.number(i)
            return ("n", i, j, d[i:j].decode()), j
        if c == 0x74:
            return ("t", i, self.lit(i, b"true"), True), i + 4
        if c == 0x66:
            return ("f", i, self.lit(i, b"false"), False), i + 5
        if c == 0x6E:
            return ("z", i, self.lit(i, b"null"), None), i + 4
        raise _syntax(c, "looking for beginning of value")

    def lit(self, i: int, word: bytes) -> int:
        d, n = self.d, self.n
        for k in range(1, len(word)):
            if i + k >= n:
                raise GoEOF()
            if d[i + k] != word[k]:
                raise _syntax(d[i + k], "in literal %s (expecting %s)"
                              % (word.decode(), quote_char(word[k])))
        return i + len(word)

    def number(self, i: int) -> int:
        d, n = self.d, self.n
        if d[i] == 0x2D:
            i += 1
            if i >= n:
                raise GoEOF()
            if d[i] not in _DIGITS:
                raise _syntax(d[i], "in numeric literal")
        if d[i] == 0x30:
            i += 1
        else:
            while i < n and d[i] in _DIGITS:
                i += 1
        if i < n and d[i] == 0x2E:
            i += 1
            if i >= n:
                raise GoEOF()
            if d[i] not in _DIGITS:
                raise _syntax(d[i], "after decimal point in numeric literal")
            while i < n and d[i] in _DIGITS:
                i += 1
        if i < n and d[i] in b"eE":
            i += 1
            if i < n and d[i] in b"+-":
                i += 1
            if i >= n:
                raise GoEOF()
            if d[i] not in _DIGITS:
                raise _syntax(d[i], "in exponent of numeric literal")
            while i < n and d[i] in _DIGITS:
                i += 1
        return i

    def string(self, i: int):
        """Scan the string at i; return (Go-decoded str, end)."""
        d, n = self.d, self.n
        j = i + 1
        plain = True
        while True:
            if j >= n:
                raise GoEOF()
            c = d[j]
            if c == 0x22:
                break
            if c == 0x5C:
                plain = False
                j += 1
                if j >= n:
                    raise GoEOF()
                e = d[j]
                if e == 0x75:
                    for k in range(1, 5):
                        if j + k >= n:
                            raise GoEOF()
                        if d[j + k] not in _HEX:
                            raise _syntax(d[j + k], "in \\u hexadecimal character escape")
                    j += 4
                elif e not in b'bfnrt\\/"':
                    raise _syntax(e, "in string escape code")
            elif c < 0x20:
                raise _syntax(c, "in string literal")
            elif c >= 0x80:
                plain = False
            j += 1
        raw = d[i + 1:j]
        if plain:
            return raw.decode("ascii"), j + 1
        return _go_unquote(raw), j + 1

    def obj(self, i: int):
        d, n = self.d, self.n
        start = i
        fields: dict = {}
        i = self.ws(i + 1)
        if i >= n:
            raise GoEOF()
        if d[i] == 0x7D:
            return ("o", start, i + 1, fields), i + 1
        while True:
            if i >= n:
                raise GoEOF()
            if d[i] != 0x22:
                raise _syntax(d[i], "looking for beginning of object key string")
            key, i = self.string(i)
            i = self.ws(i)
            if i >= n:
                raise GoEOF()
            if d[i] != 0x3A:
                raise _syntax(d[i], "after object key")
            i = self.ws(i + 1)
            node, i = self.value(i)
            fields[key] = node
            i = self.ws(i)
            if i >= n:
                raise GoEOF()
            c = d[i]
            if c == 0x2C:
                i = self.ws(i + 1)
                continue
            if c == 0x7D:
                return ("o", start, i + 1, fields), i + 1
            raise _syntax(c, "after object key:value pair")

    def arr(self, i: int):
        d, n = self.d, self.n
        start = i
        items: list = []
        i = self.ws(i + 1)
        if i >= n:
            raise GoEOF()
        if d[i] == 0x5D:
            return ("a", start, i + 1, items), i + 1
        while True:
            node, i = self.value(i)
            items.append(node)
            i = self.ws(i)
            if i >= n:
                raise GoEOF()
            c = d[i]
            if c == 0x2C:
                i = self.ws(i + 1)
                continue
            if c == 0x5D:
                return ("a", start, i + 1, items), i + 1
            raise _syntax(c, "after array element")


def _go_unquote(raw: bytes) -> str:
    """Go's json unquote of a scanned string body: escapes, surrogates, bad UTF-8 -> U+FFFD."""
    out = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x5C:
            e = raw[i + 1]
            if e == 0x75:
                r = int(raw[i + 2:i + 6], 16)
                i += 6
                if 0xD800 <= r < 0xDC00:
                    if (i + 6 <= n and raw[i] == 0x5C and raw[i + 1] == 0x75):
                        r2 = int(raw[i + 2:i + 6], 16)
                        if 0xDC00 <= r2 < 0xE000:
                            out.append(chr(0x10000 + ((r - 0xD800) << 10) + (r2 - 0xDC00)))
                            i += 6
                            continue
                    out.append("\ufffd")
                elif 0xDC00 <= r < 0xE000:
                    out.append("\ufffd")
                else:
                    out.append(chr(r))
                continue
            out.append({0x62: "\b", 0x66: "\f", 0x6E: "\n", 0x72: "\r", 0x74: "\t"}.get(e, chr(e)))
            i += 2
            continue
        j = i
        while j < n and raw[j] != 0x5C:
            j += 1
        out.append(raw[i:j].decode("utf-8", "replace"))
        i = j
    return "".join(out)


MAX_NESTING_DEPTH = 10000   # Go's encoding/json scanner: deeper is "exceeded max depth"


def nesting_depth(data: bytes, pos: int = 0) -> int:
    """The deepest [ / { nesting of the JSON text from pos (strings skipped). Only run
    for inputs deeper than Python's recursion limit: a plain byte loop. Deeper than
    Go's limit raises Go's error, naming the bracket that went over."""
    depth = deepest = 0
    in_str = esc = False
    for c in memoryview(data)[pos:]:
        if in_str:
            if esc:
                esc = False
            elif c == 0x5C:
                esc = True
            elif c == 0x22:
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c == 0x5B or c == 0x7B:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_NESTING_DEPTH:
                    raise _syntax(c, "exceeded max depth")
        elif c == 0x5D or c == 0x7D:
            depth -= 1
    return deepest


@contextlib.contextmanager
def room_for_depth(depth: int):
    """Let the recursive parser (and the walks over its tree) go `depth` levels deep.
    Python 3.11 runs Python-to-Python calls without C recursion, so a higher limit,
    for the time of one decode on this thread, costs no C stack."""
    old = sys.getrecursionlimit()
    need = old + 4 * depth + 200
    sys.setrecursionlimit(need)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def decode_next(data: bytes, pos: int = 0, final: bool = True):
    """One step of Go's json.Decoder.Decode into a json.RawMessage.

    Returns (node, end) for the next value, or (None, pos) at a clean end of
    input. With final=False an incomplete value raises GoEOF (wait for more
    bytes); with final=True it is Go's ``unexpected EOF``. Bytes after the
    value are not looked at, as Go's Decoder does not.
    """
    p = _Parser(data)
    i = p.ws(pos)
    if i >= p.n:
        return None, i
    try:
        try:
            node, end = p.value(i)
        except RecursionError:   # deeper than Python's limit, which Go's 10000 is not
            with room_for_depth(nesting_depth(data, i)):
                node, end = p.value(i)
        if node[0] == "n" and end >= p.n and not final:
            raise GoEOF()  # a number might continue in the next chunk
        return node, end
    except GoEOF:
        if final:
            raise GoJSONError("unexpected EOF") from None
        raise


def unmarshal_check(data: bytes):
    """Go's json.Unmarshal syntax pass over a whole input: the single value, or GoJSONError."""
    p = _Parser(data)
    i = p.ws(0)
    try:
        node, end = p.value(i)
    except GoEOF:
        raise GoJSONError("unexpected end of JSON input") from None
    end = p.ws(end)
    if end < p.n:
        raise _syntax(data[end], "after top-level value")
    return node


def node_raw(data: bytes, node) -> bytes:
    return data[node[1]:node[2]]


# Go's base64.StdEncoding (padded, not Strict): decodeQuantum, error positions included.
_B64 = [0xFF] * 256
for _i, _c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"):
    _B64[_c] = _i
del _i, _c


def _b64err(pos: int) -> GoJSONError:
    return GoJSONError(f"illegal base64 data at input byte {pos}")


def go_base64_decode(src: bytes) -> bytes:
    """base64.StdEncoding.DecodeString as Go 1.19 does it (CR/LF skipped)."""
    out = bytearray()
    si, n = 0, len(src)
    while si < n:
        dbuf = [0, 0, 0, 0]
        dlen = 4
        j = 0
        err = None
        while j < 4:
            if si == n:
                if j == 0:
                    return bytes(out)
                raise _b64err(si - j)
            c = src[si]
            si += 1
            v = _B64[c]
            if v != 0xFF:
                dbuf[j] = v
                j += 1
                continue
            if c in (0x0A, 0x0D):
                continue
            if c != 0x3D:
                raise _b64err(si - 1)
            if j in (0, 1):
                raise _b64err(si - 1)
            if j == 2:
                while si < n and src[si] in (0x0A, 0x0D):
                    si += 1
                if si == n:
                    raise _b64err(n)
                if src[si] != 0x3D:
                    raise _b64err(si - 1)
                si += 1
            while si < n and src[si] in (0x0A, 0x0D):
                si += 1
            if si < n:
                err = _b64err(si)
            dlen = j
            break
        val = dbuf[0] << 18 | dbuf[1] << 12 | dbuf[2] << 6 | dbuf[3]
        b = bytes(((val >> 16) & 0xFF, (val >> 8) & 0xFF, val & 0xFF))
        out += b[:dlen - 1]
        if err is not None:
            raise err
    return bytes(out)
