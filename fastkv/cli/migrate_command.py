"""fastkvctl's ``migrate``: etcdctl 3.4's flags and help, and a plain refusal.

etcdctl's migrate rewrites an offline etcd member's v2 store (its snap/ and wal/
files) into the v3 bbolt backend. A fastkv data directory holds neither format,
so there is nothing for this command to convert: it says so and exits 1.
"""
from __future__ import annotations

from fastkv.cli import flags as fl

__all__ = ["MIGRATE_COMMAND"]


def cmd_migrate(ctx, args: list[str], v: dict) -> int:
    from fastkv.cli import main as m
    raise m.Exit(m.EXIT_ERROR, "migrate is not supported by fastkvctl: it converts an offline etcd "
                               "member's v2 store files, which a fastkv data directory does not have")


MIGRATE_COMMAND = fl.Command("migrate", "Migrates keys in a v2 store to a mvcc store", "migrate [flags]",
                             cmd_migrate, [
                                 fl.Flag("data-dir", "string", "", "Path to the data directory"),
                                 fl.Flag("wal-dir", "string", "", "Path to the WAL directory"),
                                 fl.Flag("no-ttl", "bool", False, "Do not convert TTL keys"),
                                 fl.Flag("transformer", "string", "",
                                         "Path to the user-provided transformer program"),
                             ], uses_env=False)
