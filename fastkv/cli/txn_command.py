"""fastkvctl's ``txn``, as etcdctl 3.4's (ctlv3/command/txn_command.go).

stdin holds three blank-line-terminated sections: the compares, the requests to
run when every compare holds, the requests to run otherwise::

    mod("key1") > "0"              <- compares: target("key") op "value"

    put key1 "overwrote-key1"      <- success requests: put/get/del lines with the
                                      flags of those commands
    put key1 "created-key1"        <- failure requests
    put key2 "some extra key"
                                   <- (each section ends with an empty line)

``-i`` prints etcdctl's prompt before each section. A compare is parsed as Go's
``fmt.Sscanf(rest, "%q) %s %q")`` parses it, a request line is split by etcdctl's
argify and parsed by the put/get/del flag sets, so a malformed line fails with
etcdctl's message and exit code (3, or 128/4 for what the put/get/del checks
refuse). Two deliberate differences from 3.4: ``lease("k") = "<hex id>"`` works
(etcdctl 3.4 panics on any lease compare; 3.5 parses the hex ID as here), and
``get --help`` on a request line is refused as an invalid request (etcdctl 3.4
hangs forever).
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys

from fastkv.cli import flags as fl


def quote(text) -> str:
    """Go's %q (fastkv.cli.v2.gostd, imported when needed: fastkvctl starts faster)."""
    from fastkv.cli.v2.gostd import quote as go_quote
    return go_quote(text)

__all__ = ["TXN_COMMAND", "go_unquote", "argify", "parse_compare"]


def _main():
    from fastkv.cli import main   # the command layer (avoids an import cycle)
    return main


class _Panic(Exception):
    """What makes etcdctl panic (clientv3.Compare with an unknown operator): Go prints
    ``panic: <message>`` and a stack trace on stderr and exits with 2."""


class SyntaxErr(ValueError):
    """strconv.ErrSyntax."""

    def __init__(self):
        super().__init__("invalid syntax")


# -- Go's strconv.Unquote and fmt.Sscanf, the parts txn needs ---------------------------

_SIMPLE_ESCAPES = {"a": b"\a", "b": b"\b", "f": b"\f", "n": b"\n", "r": b"\r", "t": b"\t",
                   "v": b"\v", "\\": b"\\", '"': b'"'}
_HEX = "0123456789abcdefABCDEF"


def go_unquote(text: str) -> bytes:
    """strconv.Unquote of a double-quoted or back-quoted Go string literal, as bytes
    (``\\xff`` is one byte, as in Go); SyntaxErr if it is not one."""
    if len(text) < 2 or text[0] != text[-1] or text[0] not in '"`':
        raise SyntaxErr()
    body = text[1:-1]
    if text[0] == "`":
        if "`" in body:
            raise SyntaxErr()
        return body.replace("\r", "").encode("utf-8", "surrogateescape")
    if "\n" in body:
        raise SyntaxErr()
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == '"':
            raise SyntaxErr()
        if ch != "\\":
            out += ch.encode("utf-8", "surrogateescape")
            i += 1
            continue
        if i + 1 >= len(body):
            raise SyntaxErr()
        c = body[i + 1]
        i += 2
        if c in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[c]
        elif c in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[c]
            digits = body[i:i + n]
            if len(digits) != n or any(d not in _HEX for d in digits):
                raise SyntaxErr()
            i += n
            v = int(digits, 16)
            if c == "x":
                out.append(v)
            else:
                if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
                    raise SyntaxErr()
                out += chr(v).encode()
        elif c in "01234567":
            digits = body[i - 1:i + 2]
            if len(digits) != 3 or any(d not in "01234567" for d in digits):
                raise SyntaxErr()
            v = int(digits, 8)
            if v > 255:
                raise SyntaxErr()
            out.append(v)
            i += 2
        else:
            raise SyntaxErr()
    return bytes(out)


def _is_space(ch: str) -> bool:
    return ch != "\n" and ch.isspace()


class _Scan:
    """The state of one fmt.Sscanf over a string."""

    def __init__(self, s: str):
        self.s = s
        self.pos = 0

    def skip_spaces(self) -> None:
        while self.pos < len(self.s) and _is_space(self.s[self.pos]):
            self.pos += 1

    def space(self) -> None:
        """A space in the format: one or more spaces in the input, or its end."""
        if self.pos >= len(self.s):
            return
        if not _is_space(self.s[self.pos]):
            raise ValueError("expected space in input to match format")
        self.skip_spaces()

    def literal(self, ch: str) -> None:
        if self.pos >= len(self.s):
            raise ValueError("unexpected EOF")
        if self.s[self.pos] != ch:
            raise ValueError("input does not match format")
        self.pos += 1

    def word(self) -> str:
        """%s: the next run of non-space characters."""
        self.skip_spaces()
        if self.pos >= len(self.s):
            raise ValueError("unexpected EOF")
        start = self.pos
        while self.pos < len(self.s) and not self.s[self.pos].isspace():
            self.pos += 1
        return self.s[start:self.pos]

    def quoted(self) -> bytes:
        """%q: a Go string literal, double- or back-quoted."""
        self.skip_spaces()
        if self.pos >= len(self.s):
            raise ValueError("unexpected EOF")
        quote_ch = self.s[self.pos]
        if quote_ch == "`":
            end = self.s.find("`", self.pos + 1)
            if end < 0:
                raise ValueError("unexpected EOF")
            lit = self.s[self.pos:end + 1]
            self.pos = end + 1
            return _runes(lit[1:-1]).encode()
        if quote_ch != '"':
            raise ValueError("expected quoted string")
        i = self.pos + 1
        while True:
            if i >= len(self.s):
                raise ValueError("unexpected EOF")
            if self.s[i] == "\\":
                if i + 1 >= len(self.s):
                    raise ValueError("unexpected EOF")
                i += 2
                continue
            if self.s[i] == '"':
                break
            i += 1
        lit = self.s[self.pos:i + 1]
        self.pos = i + 1
        return go_unquote(_runes(lit))


def _runes(s: str) -> str:
    """What Sscanf's rune by rune reading makes of a quoted string: a byte that is not
    UTF-8 (a surrogate escape here) becomes U+FFFD."""
    return re.sub("[\udc80-\udcff]", "\ufffd", s)


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


_RESULTS = {"=": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS"}


def _int64(text: str, base: int) -> int:
    """strconv.ParseInt(text, base, 64); ValueError if it does not parse."""
    if base == 16:
        return _main().parse_hex_int64(text)
    if not re.fullmatch(r"[+-]?[0-9]+", text) or not -(1 << 63) <= int(text) < (1 << 63):
        raise ValueError(text)
    return int(text)


def parse_compare(line: str) -> dict:
    """etcdctl's ParseCompare: ``target("key") op "value"`` as a gateway Compare."""
    m = _main()
    target, sep, rest = line.partition("(")
    if not sep:
        raise m.Exit(m.EXIT_INVALID_INPUT, f"malformed comparison: {line}")
    key, op, val = b"", "", b""
    sc = _Scan(rest)
    n = 0
    try:
        key = sc.quoted()
        n = 1
        sc.literal(")")
        sc.space()
        op = sc.word()
        n = 2
        sc.space()
        val = sc.quoted()
        n = 3
    except ValueError:
        pass
    if n != 3:
        raise m.Exit(m.EXIT_INVALID_INPUT, f"malformed comparison: {line}; got {target}({quote(_text(key))}) "
                                           f"{op} {quote(_text(val))}")
    cmp = {"key": b64e(key)}
    try:
        if target in ("ver", "version"):
            cmp.update(target="VERSION", version=str(_int64(_text(val), 10)))
        elif target in ("c", "create"):
            cmp.update(target="CREATE", create_revision=str(_int64(_text(val), 10)))
        elif target in ("m", "mod"):
            cmp.update(target="MOD", mod_revision=str(_int64(_text(val), 10)))
        elif target in ("val", "value"):
            cmp.update(target="VALUE", value=b64e(val))
        elif target == "lease":
            cmp.update(target="LEASE", lease=str(_int64(_text(val), 16)))
        else:
            raise m.Exit(m.EXIT_INVALID_INPUT, f"malformed comparison: {line} (unknown target {target})")
    except ValueError:
        raise m.Exit(m.EXIT_INVALID_INPUT, f"invalid txn compare request: {line}") from None
    if op not in _RESULTS:
        raise _Panic("Unknown result op")
    cmp["result"] = _RESULTS[op]
    return cmp


def b64e(b: bytes) -> str:
    import base64
    return base64.b64encode(b).decode()


# -- request lines ------------------------------------------------------------------------

_ARG = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|[^\'"\s]\S*[^\'"\s]?')


def argify(line: str) -> list[str]:
    """etcdctl's argify: words, "Go-quoted strings" and 'single-quoted strings'. As in
    etcdctl 3.4, a single-quoted word keeps the characters [1, number of words - 1) of
    itself (a slicing bug there, kept so the same line makes the same request)."""
    m = _main()
    args = _ARG.findall(line)
    out = []
    for a in args:
        if a.startswith("'"):
            end = len(args) - 1
            if end < 1 or end > len(a):
                # Go panics: slice bounds out of range
                raise _Panic(f"runtime error: slice bounds out of range [:{end}] with length {len(a)}")
            a = a[1:end]
        elif a.startswith('"'):
            try:
                a = _text(go_unquote(_runes(a)))
            except SyntaxErr as e:
                raise m.Exit(m.EXIT_INVALID_INPUT, str(e)) from None
        out.append(a)
    return out


def _request_commands() -> fl.Command:
    """put, get and del with their own flags only (etcdctl builds them afresh for each
    line); get without 3.5's --count-only, as in 3.4."""
    root = _main().ROOT
    subs = []
    for name in ("put", "get", "del"):
        c = root.sub(name)
        flags = [f for f in c.flags if f.name != "count-only"]
        subs.append(dataclasses.replace(c, flags=flags, subcommands=[], parent=None, run=None))
    return fl.Command("", "", "", subcommands=subs)


def cobra_flag_usages(flags: list[fl.Flag]) -> str:
    """pflag's FlagUsages: ``  -h, --help   usage (default x)``, aligned."""
    rows = []
    for f in sorted(flags, key=lambda f: f.name):
        line = f"  -{f.short}, --{f.name}" if f.short else f"      --{f.name}"
        varname = {"string": "string", "int": "int", "duration": "duration",
                   "strings": "strings"}.get(f.kind, "")
        if varname:
            line += " " + varname
        usage = f.usage
        if f.kind == "string" and f.default:
            usage += f" (default {quote(f.default)})"
        elif f.kind == "int" and f.default:
            usage += f" (default {f.default})"
        elif f.kind == "bool" and f.default:
            usage += " (default true)"
        rows.append((line, usage))
    width = max(len(line) for line, _ in rows) + 1
    return "".join(f"{line} {' ' * (width - len(line))} {usage}\n" for line, usage in rows)


def cobra_usage(cmd: fl.Command) -> str:
    """cobra's default usage template for a request line's command (etcdctl's own
    template is not set on the command set txn builds)."""
    flags = cmd.flags + [fl.Flag("help", "bool", False, f"help for {cmd.name}", "h")]
    return f"Usage:\n   {cmd.usage}\n\nFlags:\n{cobra_flag_usages(flags)}\n"


def parse_request(line: str, read_stdin) -> dict:
    """etcdctl's parseRequestUnion: a put, get or del line as a gateway RequestOp."""
    m = _main()
    args = argify(line)
    if len(args) < 2:
        raise m.Exit(m.EXIT_INVALID_INPUT, f"invalid txn compare request: {line}")
    invalid = m.Exit(m.EXIT_INVALID_INPUT, f"invalid txn request: {line}")
    try:
        parsed = fl.parse(_request_commands(), [], args, env={})
    except LookupError:
        raise invalid from None
    except fl.UsageError as e:
        if e.command is not None and e.command.parent is not None:
            sys.stderr.write(cobra_usage(e.command))
            sys.stderr.flush()
        raise invalid from None
    cmd, v = parsed.command, parsed.values
    if cmd.parent is None or v.get("help"):
        raise invalid
    if cmd.name == "put":
        return {"request_put": m.put_request(parsed.args, v, read_stdin)}
    if cmd.name == "get":
        return {"request_range": m.get_request(parsed.args, v)}
    return {"request_delete_range": m.del_request(parsed.args, v)}


# -- stdin as Go's bufio.Reader sees it ----------------------------------------------------

class GoLineReader:
    """bufio.NewReader(os.Stdin).ReadString('\\n'): lines from a 4096-byte buffer; what
    the buffer has not taken is left for a read of os.Stdin itself (``put <key>`` on a
    request line reads its value from there, as etcdctl's argOrStdin does)."""

    SIZE = 4096

    def __init__(self, stream):
        self.stream = stream
        self.buf = b""
        self.eof = False
        try:
            self.fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None

    def _read(self, n: int) -> bytes:
        """At most one read of the source (what the stream has buffered already first:
        a password prompt may have read ahead)."""
        read1 = getattr(self.stream, "read1", None)
        if read1 is not None:
            return read1(n)
        if self.fd is not None:
            return os.read(self.fd, n)
        return self.stream.read(n)

    def readline(self) -> tuple[bytes, bool]:
        """(line with its newline, True) or (what was left, False) at the end of input."""
        while b"\n" not in self.buf and not self.eof:
            chunk = self._read(self.SIZE)
            if not chunk:
                self.eof = True
            self.buf += chunk
        i = self.buf.find(b"\n")
        if i < 0:
            line, self.buf = self.buf, b""
            return line, False
        line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
        return line, True

    def read_rest_unbuffered(self) -> bytes:
        """ioutil.ReadAll(os.Stdin): everything the buffer has not read yet."""
        out = b""
        while not self.eof:
            chunk = self._read(65536)
            if not chunk:
                break
            out += chunk
        return out


def _read_section(reader: GoLineReader, parse) -> list:
    m = _main()
    items = []
    while True:
        raw, ok = reader.readline()
        if not ok:
            raise m.Exit(m.EXIT_INVALID_INPUT, "EOF")
        line = raw.decode("utf-8", "surrogateescape").strip()
        if not line:
            return items
        items.append(parse(line))


def cmd_txn(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if args:
        raise m.Exit(m.EXIT_BAD_ARGS, "txn command does not accept argument")
    ctx.client()   # as etcdctl: the client (and --user's password prompt) before stdin
    reader = GoLineReader(ctx.stdin)

    def prompt(text: str) -> None:
        if v["interactive"]:
            ctx.stdout.write(text.encode() + b"\n")
            ctx.stdout.flush()

    try:
        prompt("compares:")
        compares = _read_section(reader, parse_compare)
        prompt("success requests (get, put, del):")
        success = _read_section(reader, lambda line: parse_request(line, reader.read_rest_unbuffered))
        prompt("failure requests (get, put, del):")
        failure = _read_section(reader, lambda line: parse_request(line, reader.read_rest_unbuffered))
    except _Panic as e:
        ctx.stdout.flush()
        sys.stderr.write(f"panic: {e}\n")
        sys.stderr.flush()
        return 2
    body = {}
    if compares:
        body["compare"] = compares
    if success:
        body["success"] = success
    if failure:
        body["failure"] = failure
    resp = m.call(ctx, "/v3/kv/txn", body)
    ctx.display.txn(resp)
    return m.EXIT_SUCCESS


TXN_COMMAND = fl.Command("txn", "Txn processes all the requests in one transaction", "txn [options] [flags]",
                         cmd_txn, [fl.Flag("interactive", "bool", False,
                                           "Input transaction in interactive mode", "i")])
