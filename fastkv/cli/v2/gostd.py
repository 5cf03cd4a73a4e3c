"""The bits of Go's standard library that etcdctl v2's output depends on.

etcdctl prints Go values with Go's formatting, so matching it byte for byte
means doing what these Go functions do (only as far as etcdctl uses them):

- strconv: ``Quote`` (the ``%q`` verb), ``ParseInt(s, 0, 64)``, ``ParseBool``
- time: ``ParseDuration``, RFC 3339 with nanoseconds (``time.Time`` in JSON)
- encoding/json: ``Marshal``'s string escaping (HTML-safe)
- net/url: ``Parse`` / ``URL.String``, path and query escaping
- path: ``Clean`` and ``Join``

Strings are Python ``str``; bytes that are not UTF-8 travel as surrogate
escapes (as ``os.fsdecode`` makes them) and are written back as those bytes.
"""
from __future__ import annotations

import re
import urllib.parse

from fastkv.api.gojson import go_json_string
from fastkv.v2store.wire import dumps as go_json_dumps

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
UINT64_MASK = (1 << 64) - 1


def to_bytes(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


# -- strconv -------------------------------------------------------------------

_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                  "\t": "\\t", "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def quote(s: str) -> str:
    """strconv.Quote: Go's ``%q`` of a string."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:          # a byte that is not UTF-8
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif 0xD800 <= o <= 0xDFFF:        # not a rune Go could hold
            out.append("\\ufffd")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


class NumError(ValueError):
    """strconv's error; ``str()`` is what the flag package prints after the value."""


def _underscore_ok(s: str) -> bool:
    saw = "^"
    i = 0
    if s[:1] in ("-", "+"):
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i = 2
        saw = "0"
        hexa = s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if "0" <= c <= "9" or hexa and "a" <= c.lower() <= "f":
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def parse_int(text: str, bits: int = 64) -> int:
    """strconv.ParseInt(text, 0, bits): "parse error" or "value out of range"."""
    s = text
    if not s:
        raise NumError("parse error")
    neg = False
    if s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
        if not s:
            raise NumError("parse error")
    body, base = s, 10
    if s[0] == "0":
        if len(s) >= 3 and s[1].lower() == "b":
            base, body = 2, s[2:]
        elif len(s) >= 3 and s[1].lower() == "o":
            base, body = 8, s[2:]
        elif len(s) >= 3 and s[1].lower() == "x":
            base, body = 16, s[2:]
        else:
            base, body = 8, s[1:]
    n = 0
    underscores = False
    overflow = False
    for c in body:
        if c == "_":
            underscores = True
            continue
        if "0" <= c <= "9":
            d = ord(c) - 48
        elif "a" <= c.lower() <= "z":
            d = ord(c.lower()) - 87
        else:
            raise NumError("parse error")
        if d >= base:
            raise NumError("parse error")
        n = n * base + d
        if n > UINT64_MASK:
            overflow = True
    if underscores and not _underscore_ok(s):
        raise NumError("parse error")
    if overflow:
        raise NumError("value out of range")
    limit = 1 << (bits - 1)
    if (not neg and n >= limit) or (neg and n > limit):
        raise NumError("value out of range")
    return -n if neg else n


def parse_bool(text: str) -> bool:
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise NumError("parse error")


# -- time ----------------------------------------------------------------------

_UNITS = {"ns": 1, "us": 1000, "µs": 1000, "μs": 1000, "ms": 1000000,
          "s": 1000000000, "m": 60000000000, "h": 3600000000000}


def parse_duration(text: str) -> int:
    """time.ParseDuration, in nanoseconds (ValueError on anything Go refuses)."""
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(text)
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise ValueError(text)
        m = re.match(r"(\d*)", s)
        pre = m.group(1)
        s = s[len(pre):]
        v = int(pre) if pre else 0
        f, scale, post = 0, 1, False
        if s.startswith("."):
            s = s[1:]
            m = re.match(r"(\d*)", s)
            frac = m.group(1)
            s = s[len(frac):]
            post = bool(frac)
            for c in frac:
                if scale < 10 ** 18:  # Go stops accumulating once more digits cannot matter
                    f = f * 10 + ord(c) - 48
                    scale *= 10
        if not pre and not post:
            raise ValueError(text)
        m = re.match(r"([^0-9.]*)", s)
        unit_name = m.group(1)
        s = s[len(unit_name):]
        if unit_name not in _UNITS:
            raise ValueError(text)
        unit = _UNITS[unit_name]
        if v > (1 << 63) // unit:
            raise ValueError(text)
        v *= unit
        if f:
            v += int(f * (unit / scale))
            if v > 1 << 63:
                raise ValueError(text)
        total += v
        if total > 1 << 63:
            raise ValueError(text)
    if neg:
        return -total
    if total > INT64_MAX:
        raise ValueError(text)
    return total


def format_duration(ns: int) -> str:
    """time.Duration.String (whole-unit cases used in help text defaults)."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1000000000:
        for unit, div in (("ms", 1000000), ("µs", 1000), ("ns", 1)):
            if ns >= div:
                whole, frac = divmod(ns, div)
                text = str(whole)
                if frac:
                    text += "." + f"{frac:0{len(str(div)) - 1}d}".rstrip("0")
                return sign + text + unit
    secs, frac = divmod(ns, 1000000000)
    h, rem = divmod(secs, 3600)
    m, sec = divmod(rem, 60)
    out = ""
    if h:
        out += f"{h}h"
    if h or m:
        out += f"{m}m"
    s = str(sec)
    if frac:
        s += "." + f"{frac:09d}".rstrip("0")
    return sign + out + s + "s"


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:[.,](\d+))?(Z|z|[+-]\d\d:\d\d)$")


def rfc3339nano(text: str) -> str | None:
    """A JSON time re-marshalled as Go does (time.RFC3339Nano): trailing zeros of the
    fraction dropped, a zero offset written Z. None if Go would not parse it."""
    m = _RFC3339.match(text)
    if not m:
        return None
    base, frac, zone = m.groups()
    frac = (frac or "")[:9].rstrip("0")
    if zone in ("Z", "z", "+00:00", "-00:00"):
        zone = "Z"
    return base + ("." + frac if frac else "") + zone


# -- encoding/json ---------------------------------------------------------------

# encoding/json.Marshal: the server's own Go-compatible encoder (dicts keep their order)
json_string = go_json_string
json_marshal = go_json_dumps


# -- net/url -------------------------------------------------------------------

class URLError(ValueError):
    """*url.Error: ``parse "<url>": <reason>``."""

    def __init__(self, op: str, url: str, reason: str):
        super().__init__(f"{op} {quote(url)}: {reason}")


class URL:
    """net/url.URL, the fields etcdctl's client uses."""

    def __init__(self, scheme: str = "", opaque: str = "", userinfo: str | None = None,
                 host: str = "", path: str = "", raw_query: str = "", fragment: str = "",
                 force_query: bool = False):
        self.scheme = scheme
        self.opaque = opaque
        self.userinfo = userinfo
        self.host = host
        self.path = path
        self.raw_query = raw_query
        self.fragment = fragment
        self.force_query = force_query

    def copy(self) -> "URL":
        return URL(self.scheme, self.opaque, self.userinfo, self.host, self.path,
                   self.raw_query, self.fragment, self.force_query)

    def escaped_path(self) -> str:
        if self.path == "*":
            return "*"
        return escape_path(self.path)

    def request_uri(self) -> str:
        """What goes on the request line."""
        if self.opaque:
            result = self.opaque
        else:
            result = self.escaped_path() or "/"
        if self.force_query or self.raw_query:
            result += "?" + self.raw_query
        return result

    def __str__(self) -> str:
        buf = ""
        if self.scheme:
            buf += self.scheme + ":"
        if self.opaque:
            buf += self.opaque
        else:
            if self.scheme or self.host or self.userinfo is not None:
                if self.host or self.path or self.userinfo is not None:
                    buf += "//"
                if self.userinfo is not None:
                    buf += self.userinfo + "@"
                if self.host:
                    buf += self.host
            path = self.escaped_path()
            if path and path[0] != "/" and self.host:
                buf += "/"
            if not buf:
                seg = path.split("/", 1)[0]
                if ":" in seg:
                    buf += "./"
            buf += path
        if self.force_query or self.raw_query:
            buf += "?" + self.raw_query
        if self.fragment:
            buf += "#" + urllib.parse.quote(to_bytes(self.fragment), safe="/?$&+,:;=@!()*'")
        return buf


def _get_scheme(raw: str) -> tuple[str, str]:
    for i, c in enumerate(raw):
        if "a" <= c <= "z" or "A" <= c <= "Z":
            continue
        if "0" <= c <= "9" or c in "+-.":
            if i == 0:
                return "", raw
            continue
        if c == ":":
            if i == 0:
                raise ValueError("missing protocol scheme")
            return raw[:i], raw[i + 1:]
        return "", raw
    return "", raw


def _valid_optional_port(port: str) -> bool:
    if port == "":
        return True
    if port[0] != ":":
        return False
    return all("0" <= c <= "9" for c in port[1:])


def _parse_host(host: str) -> str:
    if host.startswith("["):
        i = host.rfind("]")
        if i < 0:
            raise ValueError("missing ']' in host")
        port = host[i + 1:]
        if not _valid_optional_port(port):
            raise ValueError(f"invalid port {quote(port)} after host")
        return host
    i = host.rfind(":")
    if i != -1:
        port = host[i:]
        if not _valid_optional_port(port):
            raise ValueError(f"invalid port {quote(port)} after host")
    if "%" in host:
        _unescape(host)
    return host


def _unescape(s: str) -> str:
    i = 0
    while i < len(s):
        if s[i] == "%":
            chunk = s[i + 1:i + 3]
            if len(chunk) < 2 or any(c not in "0123456789abcdefABCDEF" for c in chunk):
                bad = s[i:i + 3]
                raise ValueError(f"invalid URL escape {quote(bad)}")
            i += 3
        else:
            i += 1
    return urllib.parse.unquote(s, errors="surrogateescape")


def parse_url(raw: str) -> URL:
    """url.Parse (raises URLError with Go's message)."""
    rest, _, frag = raw.partition("#")
    try:
        u = _parse(rest)
    except ValueError as e:
        raise URLError("parse", rest, str(e)) from None
    if frag:
        try:
            u.fragment = _unescape(frag)
        except ValueError as e:
            raise URLError("parse", raw, str(e)) from None
    return u


def _parse(raw: str) -> URL:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise ValueError("net/url: invalid control character in URL")
    u = URL()
    if raw == "*":
        u.path = "*"
        return u
    scheme, rest = _get_scheme(raw)
    u.scheme = scheme.lower()
    if rest.endswith("?") and rest.count("?") == 1:
        u.force_query = True
        rest = rest[:-1]
    else:
        rest, _, u.raw_query = rest.partition("?")
    if not rest.startswith("/"):
        if u.scheme:
            u.opaque = rest
            return u
        if ":" in rest.split("/", 1)[0]:
            raise ValueError("first path segment in URL cannot contain colon")
    if (u.scheme or not rest.startswith("///")) and rest.startswith("//"):
        authority, rest = rest[2:], ""
        i = authority.find("/")
        if i >= 0:
            authority, rest = authority[:i], authority[i:]
        i = authority.rfind("@")
        if i >= 0:
            u.userinfo, authority = authority[:i], authority[i + 1:]
        u.host = _parse_host(authority)
    u.path = _unescape(rest) if "%" in rest else rest
    return u


def escape_path(path: str) -> str:
    """url.PathEscape-like escaping of a whole path (Go's encodePath mode)."""
    return urllib.parse.quote(to_bytes(path), safe="/$&+,:;=@")


def query_escape(s: str) -> str:
    return urllib.parse.quote_plus(to_bytes(s), safe="")


def encode_values(values: dict[str, str | list[str]]) -> str:
    """url.Values.Encode: sorted by key (a key's values in order), each part query-escaped."""
    parts = []
    for k, vs in sorted(values.items()):
        for v in ([vs] if isinstance(vs, str) else vs):
            parts.append(f"{query_escape(k)}={query_escape(v)}")
    return "&".join(parts)


def parse_query(raw: str) -> dict[str, list[str]]:
    """url.ParseQuery (what URL.Query() keeps of it)."""
    values: dict[str, list[str]] = {}
    for part in raw.split("&"):
        if not part or ";" in part:
            continue
        k, _, v = part.partition("=")
        try:
            k, v = _unescape(k.replace("+", " ")), _unescape(v.replace("+", " "))
        except ValueError:
            continue
        values.setdefault(k, []).append(v)
    return values


# -- path ----------------------------------------------------------------------

def path_clean(p: str) -> str:
    if not p:
        return "."
    rooted = p.startswith("/")
    parts: list[str] = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(seg)
    s = "/".join(parts)
    if rooted:
        return "/" + s
    return s or "."


def path_join(*elems: str) -> str:
    kept = [e for e in elems if e]
    if not kept:
        return ""
    return path_clean("/".join(kept))


def canonical_url_path(p: str) -> str:
    """etcd's pkg/pathutil.CanonicalURLPath."""
    if p == "":
        return "/"
    if p[0] != "/":
        p = "/" + p
    np = path_clean(p)
    if p.endswith("/") and np != "/":
        np += "/"
    return np
