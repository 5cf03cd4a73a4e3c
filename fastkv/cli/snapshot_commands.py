"""fastkvctl's ``snapshot save|status|restore``, as etcdctl 3.4's (ctlv3/command/
snapshot_command.go and its snapshot package).

* ``save <file>``: Maintenance.Snapshot from exactly one endpoint, streamed into
  ``<file>.part`` (mode 0600), the SHA-256 at the end of the stream checked
  against the data before it, fsync, rename; ``Snapshot saved at <file>``. Every
  failure exits 5 (ExitInterrupted) and removes the ``.part`` file, as etcdctl's.
  Without ``--command-timeout`` there is no time limit (etcdctl's rule).
* ``status <file>``: hash, revision, total keys, total size
  (:mod:`fastkv.storage.restore` says what each is for our snapshot format) in
  the simple, table, json and fields formats, byte for byte as etcdctl prints them
  (sizes as go-humanize's ``Bytes``: "25 kB" in simple and table, raw in json).
* ``restore <file>``: a new member's data dir (:func:`fastkv.storage.restore.restore`);
  etcdctl's flags, defaults and messages, except that the default ``--data-dir``
  is ``<name>.fastkv`` (the fastkv server's own default), not ``<name>.etcd``.

A progress bar (bytes received or read / total) is drawn on stderr when stderr is
a terminal; otherwise nothing but etcdctl's output is written. (etcdctl 3.4 logs
JSON lines on stderr for save and restore; fastkvctl does not.)
"""
from __future__ import annotations

import hashlib
import os
import sys
import time

from fastkv.cli import flags as fl
from fastkv.cli.printer import _dump, b64, humanize_bytes, render_table
from fastkv.cli.transport import ClientError, RPCError
from fastkv.errors import StorageCorruption


class _Restore:
    """fastkv.storage.restore, imported on first use: it brings in the WAL, snapshot and
    membership code, which every other fastkvctl command would pay for at start-up."""

    def __getattr__(self, name: str):
        from fastkv.storage import restore
        return getattr(restore, name)


rs = _Restore()

__all__ = ["SNAPSHOT_COMMAND", "format_status"]


def _main():
    from fastkv.cli import main   # the command layer (avoids an import cycle)
    return main


# ---- output ---------------------------------------------------------------------------

def format_status(st: rs.Status, fmt: str) -> bytes:
    """etcdctl's DBStatus in each printer (printer_simple/table/json/fields.go)."""
    row = [f"{st.hash:x}", str(st.revision), str(st.total_key), humanize_bytes(st.total_size)]
    if fmt == "simple":
        return (", ".join(row) + "\n").encode()
    if fmt == "table":
        return render_table(["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"], [row]).encode()
    if fmt == "json":
        return _dump({"hash": st.hash, "revision": st.revision, "totalKey": st.total_key,
                      "totalSize": st.total_size})
    if fmt == "fields":
        return (f'"Hash" : {st.hash}\n"Revision" : {st.revision}\n'
                f'"Keys" : {st.total_key}\n"Size" : {st.total_size}\n').encode()
    m = _main()   # protobuf: etcdctl's pbPrinter has no DBStatus
    raise m.Exit(m.EXIT_BAD_FEATURE, f"{fmt} not supported as output format")


class ProgressBar:
    """``label [=====>    ]  42%  1.1 MB / 2.6 MB`` redrawn in place on a terminal;
    does nothing when the stream is not one."""

    WIDTH = 30

    def __init__(self, label: str, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.enabled = self.stream.isatty()
        except (AttributeError, ValueError):
            self.enabled = False
        self.label = label
        self._last = 0.0
        self._drawn = False

    def update(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        frac = min(1.0, done / total) if total > 0 else 0.0
        fill = int(frac * self.WIDTH)
        bar = "=" * fill + (">" if fill < self.WIDTH else "") + " " * (self.WIDTH - fill - 1)
        text = (f"\r{self.label} [{bar}] {frac * 100:3.0f}%  "
                f"{humanize_bytes(done)} / {humanize_bytes(total)}\x1b[K")
        self.stream.write(text)
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


# ---- snapshot save --------------------------------------------------------------------

DEFAULT_COMMAND_TIMEOUT = 5.0


def cmd_snapshot_save(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) != 1:
        raise m.Exit(m.EXIT_BAD_ARGS, "snapshot save expects one argument")
    path = args[0]
    endpoints = [e for e in v["endpoints"] if e.strip()]
    if len(endpoints) != 1:
        raise m.Exit(m.EXIT_INTERRUPTED, "snapshot must be requested to one selected node, "
                                         f"not multiple [{' '.join(endpoints)}]")
    try:
        client = ctx.client()
    except m.Exit as e:
        raise m.Exit(m.EXIT_INTERRUPTED, e.message) from None
    part = path + ".part"
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise m.Exit(m.EXIT_INTERRUPTED,
                     f"could not open {part} ({rs.go_path_error('open', part, e)})") from None
    # etcdctl: no deadline unless --command-timeout is set (its default cannot be told from
    # "not set" here, so a value other than the default counts as set)
    limit = v["command-timeout"] if v["command-timeout"] != DEFAULT_COMMAND_TIMEOUT else None
    bar = ProgressBar("Downloading snapshot")
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                _receive(client, f, part, limit, bar)
            finally:
                bar.finish()
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                raise m.Exit(m.EXIT_INTERRUPTED, rs.go_path_error("sync", part, e)) from None
        try:
            os.rename(part, path)
        except OSError as e:
            raise m.Exit(m.EXIT_INTERRUPTED, f"could not rename {part} to {path} "
                                             f"({_go_link_error(part, path, e)})") from None
    finally:
        if os.path.exists(part):   # etcdctl: defer os.RemoveAll(partpath)
            os.unlink(part)
    ctx.stdout.write(f"Snapshot saved at {path}\n".encode("utf-8", "surrogateescape"))
    return m.EXIT_SUCCESS


def _go_link_error(old: str, new: str, e: OSError) -> str:
    text = e.strerror or str(e)
    return f"rename {old} {new}: {text[:1].lower()}{text[1:]}"


def _receive(client, f, part: str, limit: float | None, bar: ProgressBar) -> None:
    """Stream the snapshot into f: every byte as sent (the SHA-256 included, as etcdctl
    writes it), hashing all but the last 32 bytes; then check that digest."""
    import http.client
    m = _main()
    from fastkv.cli.auth_commands import rpc_error_text
    sha = hashlib.sha256()
    tail = b""             # the newest 32 bytes: the digest, once the stream ends
    received = 0
    total = None           # the data's size, from the first message's remaining_bytes
    deadline = None if limit is None else time.monotonic() + limit
    try:
        for resp in client.stream("/v3/maintenance/snapshot", {}, timeout=limit):
            blob = b64(resp.get("blob"))
            if total is None:
                total = len(blob) + int(resp.get("remaining_bytes", 0) or 0)
            try:
                f.write(blob)
            except OSError as e:   # not the stream's fault: say which file
                raise m.Exit(m.EXIT_INTERRUPTED, rs.go_path_error("write", part, e)) from None
            received += len(blob)
            joined = tail + blob
            sha.update(joined[:-rs.SHA256_SIZE])
            tail = joined[-rs.SHA256_SIZE:]
            bar.update(min(received, total + rs.SHA256_SIZE), total + rs.SHA256_SIZE)
            if deadline is not None and time.monotonic() > deadline:
                raise m.Exit(m.EXIT_INTERRUPTED, "context deadline exceeded")
    except RPCError as e:
        raise m.Exit(m.EXIT_INTERRUPTED, rpc_error_text(e)) from None
    except ClientError as e:
        raise m.Exit(m.EXIT_INTERRUPTED, str(e)) from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise m.Exit(m.EXIT_INTERRUPTED, f"snapshot stream broke off: {e}") from None
    if total is None or received != total + rs.SHA256_SIZE:
        expected = "a snapshot" if total is None else f"{total + rs.SHA256_SIZE} bytes"
        raise m.Exit(m.EXIT_INTERRUPTED, f"snapshot stream incomplete: {received} bytes "
                                         f"received, expected {expected}")
    if sha.digest() != tail:
        raise m.Exit(m.EXIT_INTERRUPTED, "snapshot integrity check failed: the SHA-256 sent "
                                         "with the snapshot does not match its data")


# ---- snapshot status ------------------------------------------------------------------

def cmd_snapshot_status(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) != 1:
        raise m.Exit(m.EXIT_BAD_ARGS, "snapshot status requires exactly one argument")
    path = args[0]
    try:
        os.stat(path)
    except OSError as e:
        raise m.Exit(m.EXIT_ERROR, rs.go_path_error("stat", path, e)) from None
    try:
        st = rs.status(path)
    except OSError as e:
        raise m.Exit(m.EXIT_ERROR, rs.go_path_error("open", path, e)) from None
    except StorageCorruption as e:
        raise m.Exit(m.EXIT_ERROR, f"snapshot file integrity check failed: {e}") from None
    ctx.stdout.write(format_status(st, ctx.format))
    return m.EXIT_SUCCESS


# ---- snapshot restore -----------------------------------------------------------------

def _flag_value(name: str, text: str):
    """A server flag's value parsed as the fastkv server parses it (fastkv.config)."""
    from fastkv import config
    m = _main()
    try:
        return config.FLAGS_BY_NAME[name].parse(text)
    except ValueError as e:
        detail = str(e)
        if detail and detail != text:   # e.g. etcd's "URL scheme must be http, ...: foo"
            raise m.Exit(m.EXIT_ERROR, detail) from None
        raise m.Exit(m.EXIT_ERROR, f'invalid value "{text}" for flag --{name}') from None


def restore_config(v: dict) -> rs.RestoreConfig:
    """The restore flags, parsed as the fastkv server parses the same flags."""
    return rs.RestoreConfig(
        name=v["name"],
        initial_cluster=_flag_value("initial-cluster", v["initial-cluster"]),
        initial_cluster_token=v["initial-cluster-token"],
        initial_advertise_peer_urls=_flag_value("initial-advertise-peer-urls",
                                                v["initial-advertise-peer-urls"]),
        data_dir=v["data-dir"], wal_dir=v["wal-dir"], skip_hash_check=v["skip-hash-check"])


def cmd_snapshot_restore(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) != 1:
        raise m.Exit(m.EXIT_BAD_ARGS, "snapshot restore requires exactly one argument")
    cfg = restore_config(v)
    bar = ProgressBar("Reading snapshot")
    try:
        rs.restore(args[0], cfg, progress=bar.update if bar.enabled else None)
    except rs.RestoreError as e:
        raise m.Exit(m.EXIT_ERROR, str(e)) from None
    except OSError as e:
        if e.filename == args[0]:    # the snapshot file: Go's "open f: no such file or directory"
            raise m.Exit(m.EXIT_ERROR, rs.go_path_error("open", args[0], e)) from None
        raise m.Exit(m.EXIT_ERROR, f"could not write the data dir: {e}") from None
    except StorageCorruption as e:
        raise m.Exit(m.EXIT_ERROR, str(e)) from None
    finally:
        bar.finish()
    return m.EXIT_SUCCESS


# ---- the command table ----------------------------------------------------------------

F, C = fl.Flag, fl.Command

SNAPSHOT_COMMAND = C("snapshot", "Manages etcd node snapshots", "snapshot <subcommand> [flags]",
                     subcommands=[
    C("restore", "Restores an etcd member snapshot to an etcd directory",
      "snapshot restore <filename> [options] [flags]", cmd_snapshot_restore, [
          F("data-dir", "string", "", "Path to the data directory"),
          F("wal-dir", "string", "", "Path to the WAL directory (use --data-dir if none given)"),
          F("initial-cluster", "string", "default=http://localhost:2380",
            "Initial cluster configuration for restore bootstrap"),
          F("initial-cluster-token", "string", "etcd-cluster",
            "Initial cluster token for the etcd cluster during restore bootstrap"),
          F("initial-advertise-peer-urls", "string", "http://localhost:2380",
            "List of this member's peer URLs to advertise to the rest of the cluster"),
          F("name", "string", "default", "Human-readable name for this member"),
          F("skip-hash-check", "bool", False,
            "Ignore snapshot integrity hash value (required if copied from data directory)"),
      ], uses_env=False),   # etcdctl reads no ETCDCTL_* variable for restore and status
    C("save", "Stores an etcd node backend snapshot to a given file",
      "snapshot save <filename> [flags]", cmd_snapshot_save),
    C("status", "Gets backend snapshot status of a given file",
      "snapshot status <filename> [flags]", cmd_snapshot_status,
      description="When --write-out is set to simple, this command prints out "
                  "comma-separated status lists for each endpoint.\n"
                  "The items in the lists are hash, revision, total keys, total size.", uses_env=False),
])
del F, C
