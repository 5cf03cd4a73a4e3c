"""fastkvctl in etcdctl's v2 mode (``ETCDCTL_API=2``): the App, its flags and its
command table, as etcdctl/ctlv2/ctl.go declares them.

The table is etcdctl's, in etcdctl's order, because the help text lists it.
``user``, ``role`` and ``auth`` are in fastkv/cli/v2/auth_commands.py.
"""
from __future__ import annotations

import os
import signal
import sys

from fastkv.cli.v2 import auth_commands as auth_cmd
from fastkv.cli.v2 import commands as cmd
from fastkv.cli.v2.flags import (
    IO, App, BoolFlag, Command, DurationFlag, IntFlag, OsExit, StringFlag, StringSliceFlag)

PROGRAM = "etcdctl"  # urfave prints the program name in help; keep etcdctl's wording
VERSION = "3.4.23"
SECOND = 1000000000

GLOBAL_FLAGS = [
    BoolFlag("debug", "output cURL commands which can be used to reproduce the request"),
    BoolFlag("no-sync", "don't synchronize cluster information before sending request"),
    StringFlag("output, o", "simple", "output response in the given format (`simple`, `extended` or `json`)"),
    StringFlag("discovery-srv, D", "", "domain name to query for SRV records describing cluster endpoints"),
    BoolFlag("insecure-discovery", "accept insecure SRV records describing cluster endpoints"),
    StringFlag("peers, C", "", 'DEPRECATED - "--endpoints" should be used instead'),
    StringFlag("endpoint", "", 'DEPRECATED - "--endpoints" should be used instead'),
    StringFlag("endpoints", "", "a comma-delimited list of machine addresses in the cluster "
                                '(default: "http://127.0.0.1:2379,http://127.0.0.1:4001")'),
    StringFlag("cert-file", "", "identify HTTPS client using this SSL certificate file"),
    StringFlag("key-file", "", "identify HTTPS client using this SSL key file"),
    StringFlag("ca-file", "", "verify certificates of HTTPS-enabled servers using this CA bundle"),
    StringFlag("username, u", "", "provide username[:password] and prompt if password is not supplied."),
    DurationFlag("timeout", 2 * SECOND, "connection timeout per request"),
    DurationFlag("total-timeout", 5 * SECOND, "timeout for the command execution (except watch)"),
]

TTL = IntFlag("ttl", 0, "key time-to-live in seconds")


def command_table() -> list[Command]:
    """ctl.go's app.Commands (fresh objects: the App mutates them while running)."""
    return [
        Command("backup", "backup an etcd directory", " ", flags=[
            StringFlag("data-dir", "", "Path to the etcd data dir"),
            StringFlag("wal-dir", "", "Path to the etcd wal dir"),
            StringFlag("backup-dir", "", "Path to the backup dir"),
            StringFlag("backup-wal-dir", "", "Path to the backup wal dir"),
            BoolFlag("with-v3", "Backup v3 backend data"),
        ], action=cmd.backup_command),
        Command("cluster-health", "check the health of the etcd cluster", " ", flags=[
            BoolFlag("forever, f", "forever check the health every 10 second until CTRL+C"),
        ], action=cmd.cluster_health_command),
        Command("mk", "make a new key with a given value", "<key> <value>", flags=[
            BoolFlag("in-order", "create in-order key under directory <key>"),
            TTL,
        ], action=cmd.mk_command),
        Command("mkdir", "make a new directory", "<key>", flags=[TTL], action=cmd.mkdir_command),
        Command("rm", "remove a key or a directory", "<key>", flags=[
            BoolFlag("dir", "removes the key if it is an empty directory or a key-value pair"),
            BoolFlag("recursive, r", "removes the key and all child keys(if it is a directory)"),
            StringFlag("with-value", "", "previous value"),
            IntFlag("with-index", 0, "previous index"),
        ], action=cmd.rm_command),
        Command("rmdir", "removes the key if it is an empty directory or a key-value pair", "<key>",
                action=cmd.rmdir_command),
        Command("get", "retrieve the value of a key", "<key>", flags=[
            BoolFlag("sort", "returns result in sorted order"),
            BoolFlag("quorum, q", "require quorum for get request"),
        ], action=cmd.get_command),
        Command("ls", "retrieve a directory", "[key]", flags=[
            BoolFlag("sort", "returns result in sorted order"),
            BoolFlag("recursive, r", "returns all key names recursively for the given path"),
            BoolFlag("p", "append slash (/) to directories"),
            BoolFlag("quorum, q", "require quorum for get request"),
        ], action=cmd.ls_command),
        Command("set", "set the value of a key", "<key> <value>",
                description="Set sets the value of a key.\n\n"
                            "   When <value> begins with '-', <value> is interpreted as a flag.\n"
                            "   Insert '--' for workaround:\n\n"
                            "   $ set -- <key> <value>",
                flags=[
                    TTL,
                    StringFlag("swap-with-value", "", "previous value"),
                    IntFlag("swap-with-index", 0, "previous index"),
                ], action=cmd.set_command),
        Command("setdir", "create a new directory or update an existing directory TTL", "<key>",
                flags=[TTL], action=cmd.setdir_command),
        Command("update", "update an existing key with a given value", "<key> <value>", flags=[TTL],
                action=cmd.update_command),
        Command("updatedir", "update an existing directory", "<key> <value>", flags=[TTL],
                action=cmd.updatedir_command),
        Command("watch", "watch a key for changes", "<key>", flags=[
            BoolFlag("forever, f", "forever watch a key until CTRL+C"),
            IntFlag("after-index", 0, "watch after the given index"),
            BoolFlag("recursive, r", "returns all values for key and child keys"),
        ], action=cmd.watch_command),
        Command("exec-watch", "watch a key for changes and exec an executable", "<key> <command> [args...]",
                flags=[
                    IntFlag("after-index", 0, "watch after the given index"),
                    BoolFlag("recursive, r", "watch all values for key and child keys"),
                ], action=cmd.exec_watch_command),
        Command("member", "member add, remove and list subcommands", subcommands=[
            Command("list", "enumerate existing cluster members", " ", action=cmd.member_list),
            Command("add", "add a new member to the etcd cluster", "<name> <peerURL>", action=cmd.member_add),
            Command("remove", "remove an existing member from the etcd cluster", "<memberID>",
                    action=cmd.member_remove),
            Command("update", "update an existing member in the etcd cluster", "<memberID> <peerURLs>",
                    action=cmd.member_update),
        ]),
        Command("user", "user add, grant and revoke subcommands", subcommands=[
            Command("add", "add a new user for the etcd cluster", "<user>", action=auth_cmd.user_add),
            Command("get", "get details for a user", "<user>", action=auth_cmd.user_get),
            Command("list", "list all current users", "<user>", action=auth_cmd.user_list),
            Command("remove", "remove a user for the etcd cluster", "<user>", action=auth_cmd.user_remove),
            Command("grant", "grant roles to an etcd user", "<user>",
                    flags=[StringSliceFlag("roles", "List of roles to grant or revoke")],
                    action=auth_cmd.user_grant),
            Command("revoke", "revoke roles for an etcd user", "<user>",
                    flags=[StringSliceFlag("roles", "List of roles to grant or revoke")],
                    action=auth_cmd.user_revoke),
            Command("passwd", "change password for a user", "<user>", action=auth_cmd.user_passwd),
        ]),
        Command("role", "role add, grant and revoke subcommands", subcommands=[
            Command("add", "add a new role for the etcd cluster", "<role> ", action=auth_cmd.role_add),
            Command("get", "get details for a role", "<role>", action=auth_cmd.role_get),
            Command("list", "list all roles", " ", action=auth_cmd.role_list),
            Command("remove", "remove a role from the etcd cluster", "<role>", action=auth_cmd.role_remove),
            Command("grant", "grant path matches to an etcd role", "<role>", flags=[
                StringFlag("path", "", "Path granted for the role to access"),
                BoolFlag("read", "Grant read-only access"),
                BoolFlag("write", "Grant write-only access"),
                BoolFlag("readwrite, rw", "Grant read-write access"),
            ], action=auth_cmd.role_grant),
            Command("revoke", "revoke path matches for an etcd role", "<role>", flags=[
                StringFlag("path", "", "Path revoked for the role to access"),
                BoolFlag("read", "Revoke read access"),
                BoolFlag("write", "Revoke write access"),
                BoolFlag("readwrite, rw", "Revoke read-write access"),
            ], action=auth_cmd.role_revoke),
        ]),
        Command("auth", "overall auth controls", subcommands=[
            Command("enable", "enable auth access controls", " ", action=auth_cmd.auth_enable),
            Command("disable", "disable auth access controls", " ", action=auth_cmd.auth_disable),
        ]),
    ]


def _print_version(c) -> None:
    c.app.out(f"etcdctl version: {c.app.version}\nAPI version: 2\n")


def new_app(io: IO) -> App:
    return App(name=PROGRAM, io=io, help_name=PROGRAM, usage="A simple command line client for etcd.",
               version=VERSION, flags=list(GLOBAL_FLAGS), commands=command_table(),
               version_printer=_print_version)


def main(argv: list[str] | None = None, stdin=None, stdout=None, stderr=None,
         interrupt_kills: bool = True) -> int:
    """ctlv2.Start: run the App; an error it returns is printed and exits 1."""
    if argv is None:  # run as a program: die quietly on a closed pipe, as Go programs do
        argv = sys.argv[1:]
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    io = IO(stdout or sys.stdout.buffer, stderr or sys.stderr.buffer, stdin or sys.stdin.buffer)
    argv = [os.fsdecode(a) if isinstance(a, bytes) else a for a in argv]
    try:
        err = new_app(io).run([PROGRAM] + argv)
        if err is not None:
            io.err(f"{err}\n")
            return 1
        return 0
    except OsExit as e:
        return e.code
    except KeyboardInterrupt:
        if interrupt_kills:
            _die_of_sigint(io)
        return 130
    except BrokenPipeError:
        return 1
    finally:
        try:
            io.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass


def _die_of_sigint(io: IO) -> None:
    """Leave as a Go program does on Ctrl-C: killed by SIGINT."""
    try:
        io.stdout.flush()
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
