"""fastkvctl's ``make-mirror``, as etcdctl 3.4's (ctlv3/command/make_mirror_command.go
and clientv3/mirror's syncer).

Copies the keys under ``--prefix`` (all keys without it) from the cluster of
``--endpoints`` to the destination cluster, then follows the source's watch
and applies each revision's changes there as one transaction, until
interrupted. The key's ``--prefix`` is replaced by ``--dest-prefix`` (by
default the same prefix; ``--no-dest-prefix``: none). Every 30 seconds the
number of keys mirrored so far is printed, as etcdctl does.

``--max-txn-ops`` is etcdctl 3.5's flag (a revision with more changes than
that is applied in several transactions; 3.4 would send one transaction and
fail with the server's "too many operations in txn request").
"""
from __future__ import annotations

import base64
import ssl
import threading
import time

from fastkv.cli import flags as fl
from fastkv.cli.transport import ClientError, GatewayClient, RPCError
from fastkv.keyrange import prefix_end

__all__ = ["MAKE_MIRROR_COMMAND"]

BATCH_LIMIT = 1000          # mirror.syncer's page size
REPORT_INTERVAL = 30.0      # seconds between the printed counts


def _main():
    from fastkv.cli import main   # the command layer (avoids an import cycle)
    return main


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _dest_client(ctx, endpoint: str, v: dict) -> GatewayClient:
    """etcdctl builds the destination client from the --dest-* flags only: no user,
    the global dial timeout."""
    m = _main()
    tls = None
    if v["dest-cacert"] or v["dest-cert"] or not v["dest-insecure-transport"] or endpoint.startswith("https://"):
        try:
            tls = ssl.create_default_context(cafile=v["dest-cacert"] or None)
            if v["dest-cert"]:
                tls.load_cert_chain(v["dest-cert"], v["dest-key"] or None)
        except OSError as e:
            raise m.Exit(m.EXIT_BAD_CONNECTION, str(e)) from None
        if "://" not in endpoint:
            endpoint = "https://" + endpoint.strip()
    try:
        return GatewayClient([endpoint], ctx.values["dial-timeout"], ctx.values["command-timeout"], tls)
    except (ClientError, ValueError) as e:
        raise m.Exit(m.EXIT_BAD_CONNECTION, str(e)) from None


class _Counter:
    """The mirrored-keys count and the thread printing it every REPORT_INTERVAL."""

    def __init__(self, out):
        self.total = 0
        self.out = out
        self.lock = threading.Lock()
        threading.Thread(target=self._report, name="mirror-report", daemon=True).start()

    def add(self, n: int = 1) -> None:
        with self.lock:
            self.total += n

    def _report(self) -> None:
        while True:
            time.sleep(REPORT_INTERVAL)
            with self.lock:
                text = f"{self.total}\n".encode()
                try:
                    self.out.write(text)
                    self.out.flush()
                except (OSError, ValueError):
                    return


def _retrying(fn, *args):
    """clientv3 retries an unavailable endpoint; so do we (a server error stops us)."""
    while True:
        try:
            return fn(*args)
        except RPCError:
            raise
        except ClientError:
            time.sleep(0.5)


def cmd_make_mirror(ctx, args: list[str], v: dict) -> int:
    m = _main()
    if len(args) != 1:
        raise m.Exit(m.EXIT_BAD_ARGS, "make-mirror takes one destination argument")
    if v["max-txn-ops"] <= 0:
        raise m.Exit(m.EXIT_BAD_ARGS, "--max-txn-ops must be positive")
    dest = _dest_client(ctx, args[0], v)
    src = ctx.client()
    counter = _Counter(ctx.stdout)
    prefix = v["prefix"].encode("utf-8", "surrogateescape")
    try:
        # SyncBase: the revision to copy at (a Get of "foo" tells the current one)
        rev = _retrying(src.call, "/v3/kv/range", {"key": _b64(b"foo")})["header"]["revision"]
        if v["no-dest-prefix"] and v["dest-prefix"]:
            raise m.Exit(m.EXIT_BAD_ARGS,
                         "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one")
        dest_prefix = v["dest-prefix"].encode("utf-8", "surrogateescape")
        if not v["no-dest-prefix"] and not dest_prefix:
            dest_prefix = prefix

        def rename(key: bytes) -> bytes:   # strings.Replace(key, prefix, destPrefix, 1)
            return key.replace(prefix, dest_prefix, 1)

        key, end = (prefix, prefix_end(prefix)) if prefix else (b"\x00", b"\x00")
        while True:
            page = _retrying(src.call, "/v3/kv/range", {"key": _b64(key), "range_end": _b64(end),
                                                         "limit": str(BATCH_LIMIT), "revision": str(rev)})
            for kv in page.get("kvs", []):
                body = {"key": _b64(rename(base64.b64decode(kv["key"])))}
                if kv.get("value"):
                    body["value"] = kv["value"]
                _retrying(dest.call, "/v3/kv/put", body)
                counter.add()
            if not page.get("more"):
                break
            key = base64.b64decode(page["kvs"][-1]["key"]) + b"\x00"
        _sync_updates(src, dest, key=prefix or b"\x00", end=end, rev=rev, rename=rename,
                      counter=counter, max_ops=v["max-txn-ops"])
    except ClientError as e:
        raise m.Exit(m.EXIT_ERROR, str(e)) from None
    return m.EXIT_SUCCESS   # not reached: the watch never ends by itself


def _sync_updates(src, dest, *, key, end, rev, rename, counter, max_ops) -> None:
    """SyncUpdates: watch from rev+1; each revision's events become one txn."""
    next_rev = rev + 1
    create = {"key": _b64(key), "range_end": _b64(end)}
    while True:
        create["start_revision"] = str(next_rev)
        try:
            for resp in src.stream("/v3/watch", {"create_request": create}, timeout=None):
                if resp.get("compact_revision"):
                    raise RPCError(11, "etcdserver: mvcc: required revision has been compacted")
                if resp.get("created") and not resp.get("canceled"):
                    continue
                if resp.get("canceled"):
                    raise RPCError(2, resp.get("cancel_reason") or "watch canceled")
                ops: list[dict] = []
                last = 0
                for ev in resp.get("events", []):
                    kv = ev.get("kv", {})
                    rev_of = kv.get("mod_revision", 0)
                    if (last and rev_of > last) or len(ops) == max_ops:
                        _retrying(dest.call, "/v3/kv/txn", {"success": ops})
                        ops = []
                    last = rev_of
                    k = _b64(rename(base64.b64decode(kv.get("key", ""))))
                    if ev.get("type") in ("DELETE", 1):
                        ops.append({"request_delete_range": {"key": k}})
                    else:
                        put = {"key": k}
                        if kv.get("value"):
                            put["value"] = kv["value"]
                        ops.append({"request_put": put})
                    counter.add()
                    next_rev = rev_of + 1
                if ops:
                    _retrying(dest.call, "/v3/kv/txn", {"success": ops})
        except RPCError:
            raise
        except ClientError:
            pass   # the source went away: watch again from where we were, as clientv3 does
        time.sleep(0.5)


MAKE_MIRROR_COMMAND = fl.Command(
    "make-mirror", "Makes a mirror at the destination etcd cluster", "make-mirror [options] <destination> [flags]",
    cmd_make_mirror, [
        fl.Flag("prefix", "string", "", "Key-value prefix to mirror"),
        fl.Flag("dest-prefix", "string", "",
                "destination prefix to mirror a prefix to a different prefix in the destination cluster"),
        fl.Flag("no-dest-prefix", "bool", False, "mirror key-values to the root of the destination cluster"),
        fl.Flag("dest-cert", "string", "",
                "Identify secure client using this TLS certificate file for the destination cluster"),
        fl.Flag("dest-key", "string", "", "Identify secure client using this TLS key file"),
        fl.Flag("dest-cacert", "string", "", "Verify certificates of TLS enabled secure servers using this CA bundle"),
        fl.Flag("dest-insecure-transport", "bool", True, "Disable transport security for client connections"),
        fl.Flag("max-txn-ops", "int", 128,
                "Maximum number of operations permitted in a transaction during syncing updates."),
    ])
