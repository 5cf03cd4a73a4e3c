"""etcd's command-line flags, their ETCD_* environment variables, and defaults.

Accepted like etcd (Go's flag package): ``-flag`` or ``--flag``, ``--flag=value``
or ``--flag value``; booleans also bare (``--enable-v2``). A flag set on the
command line wins over its environment variable (ETCD_ + upper-case name with
``-`` → ``_``). An unknown flag or a bad value exits 2 with a message naming it.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from urllib.parse import urlsplit

from fastkv import __version__


class ConfigError(Exception):
    """A flag or value etcd would refuse; the message names it."""


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise ValueError(text)


def _urls(text: str) -> list[str]:
    urls = [u.strip() for u in text.split(",") if u.strip()]
    if not urls:
        raise ValueError(text)
    for u in urls:
        parts = urlsplit(u)
        if parts.scheme not in ("http", "https", "unix", "unixs") or not parts.netloc:
            raise ValueError(f'URL scheme must be http, https, unix, or unixs: {u}')
        if parts.scheme in ("http", "https") and parts.port is None:
            raise ValueError(f"URL address does not have the form \"host:port\": {u}")
    return urls


def _initial_cluster(text: str) -> dict[str, list[str]]:
    members: dict[str, list[str]] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, url = item.partition("=")
        if not sep or not name:
            raise ValueError(text)
        members.setdefault(name, []).extend(_urls(url))
    if not members:
        raise ValueError(text)
    return members


def _cluster_state(text: str) -> str:
    if text not in ("new", "existing"):
        raise ValueError(text)
    return text


def _choice(*choices: str):
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text
    return parse


def _grpc_transport(text: str) -> str:
    if text not in ("native", "grpcio"):
        raise ValueError(text)
    return text


def _log_level(text: str) -> str:
    if text not in ("debug", "info", "warn", "error", "panic", "fatal"):
        raise ValueError(text)
    return text


def _compaction_mode(text: str) -> str:
    if text not in ("periodic", "revision"):
        raise ValueError(f"unknown auto-compaction-mode {text!r}")
    return text


def _logger(text: str) -> str:
    if text not in ("capnslog", "zap"):
        raise ValueError(f"unknown logger option {text!r}")
    return text


def _log_outputs(text: str) -> list[str]:
    outputs = [o.strip() for o in text.split(",") if o.strip()]
    if not outputs:
        raise ValueError(text)
    return outputs


def _cipher_suites(text: str) -> list[str]:
    """Go cipher suite names, comma-separated (checked at start-up, as etcd)."""
    return text.split(",") if text else []


def _auth_token(text: str) -> str:
    """--auth-token, checked as etcd's NewTokenProvider would (the key files are read);
    the server builds the provider from the text."""
    from fastkv.auth.jwt_tokens import AuthOptionsError, token_provider
    try:
        token_provider(text, 300)
    except AuthOptionsError as exc:
        raise ValueError(str(exc)) from None
    return text


def _positive_int(text: str) -> int:
    v = int(text, 10)
    if v < 0:
        raise ValueError(text)
    return v


def _duration(text: str) -> float:
    """A Go time.Duration flag ("1s", "500ms", "10m"), in seconds; Go's flag package
    reports any bad duration as "parse error"."""
    from fastkv.auth.jwt_tokens import parse_go_duration
    try:
        return parse_go_duration(text)
    except ValueError:
        raise ValueError("parse error") from None


def _duration_text(seconds: float) -> str:
    """A default duration as etcd's help shows it: 10m, 1s, 100ms."""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds * 1000:g}ms"


@dataclasses.dataclass(frozen=True)
class Flag:
    name: str
    parse: object
    default: object
    help: str
    later: str = ""  # the issue that makes the flag do more than parse, if any


FLAGS = [
    Flag("config-file", str, "",
         "Path to the server configuration file (etcd's YAML). Note that if a configuration "
         "file is provided, other command line flags and environment variables will be "
         "ignored."),
    Flag("name", str, "default", "Human-readable name for this member."),
    Flag("data-dir", str, "", "Path to the data directory (default: ${name}.fastkv)."),
    Flag("wal-dir", str, "", "Path to the dedicated wal directory."),
    Flag("listen-client-urls", _urls, ["http://127.0.0.1:2379"],
         "List of URLs to listen on for client traffic (HTTP/1.1 JSON gateway)."),
    Flag("advertise-client-urls", _urls, ["http://127.0.0.1:2379"],
         "List of this member's client URLs to advertise to the public."),
    Flag("listen-metrics-urls", _urls, [],
         "List of URLs to listen on for the metrics and health endpoints."),
    Flag("listen-peer-urls", _urls, ["http://127.0.0.1:2380"],
         "List of URLs to listen on for peer traffic."),
    Flag("initial-advertise-peer-urls", _urls, ["http://127.0.0.1:2380"],
         "List of this member's peer URLs to advertise to the rest of the cluster."),
    Flag("initial-cluster", _initial_cluster, {"default": ["http://127.0.0.1:2380"]},
         "Initial cluster configuration for bootstrapping (name=peer-url,...)."),
    Flag("initial-cluster-state", _cluster_state, "new",
         "Initial cluster state ('new' or 'existing')."),
    Flag("initial-cluster-token", str, "etcd-cluster",
         "Initial cluster token for the cluster during bootstrap."),
    # bootstrap by discovery (fastkv/discovery.py): one of these or --initial-cluster
    Flag("discovery", str, "", "Discovery URL used to bootstrap the cluster."),
    Flag("discovery-fallback", _choice("exit", "proxy"), "proxy",
         "Expected behavior ('exit' or 'proxy') when discovery services fails. \"proxy\" "
         "supports v2 API only."),
    Flag("discovery-proxy", str, "", "HTTP proxy to use for traffic to discovery service."),
    Flag("discovery-srv", str, "", "DNS domain used to bootstrap initial cluster."),
    Flag("discovery-srv-name", str, "",
         "Service name to query when using DNS discovery."),
    # the v2 proxy (fastkv/proxy.py): forwards client requests, does not join
    Flag("proxy", _choice("off", "readonly", "on"), "off",
         "Proxy mode setting ('off', 'readonly' or 'on')."),
    Flag("proxy-failure-wait", _positive_int, 5000,
         "Time (in milliseconds) an endpoint will be held in a failed state."),
    Flag("proxy-refresh-interval", _positive_int, 30000,
         "Time (in milliseconds) of the endpoints refresh interval."),
    Flag("proxy-dial-timeout", _positive_int, 1000,
         "Time (in milliseconds) for a dial to timeout."),
    Flag("proxy-write-timeout", _positive_int, 5000,
         "Time (in milliseconds) for a write to timeout."),
    Flag("proxy-read-timeout", _positive_int, 0,
         "Time (in milliseconds) for a read to timeout."),
    Flag("snapshot-count", _positive_int, 100000,
         "Number of committed transactions to trigger a snapshot to disk."),
    Flag("heartbeat-interval", _positive_int, 100,
         "Time (in milliseconds) of a heartbeat interval."),
    Flag("election-timeout", _positive_int, 1000,
         "Time (in milliseconds) for an election to timeout."),
    Flag("force-new-cluster", _bool, False,
         "Force to create a new one member cluster (from this member's data, or a backup)."),
    Flag("strict-reconfig-check", _bool, True,
         "Reject reconfiguration requests that would cause quorum loss."),
    Flag("experimental-snapshot-catchup-entries", _positive_int, 5000,
         "Number of entries for a slow follower to catch up after compacting the raft "
         "storage entries."),
    Flag("quota-backend-bytes", _positive_int, 0,
         "Raise alarms when backend size exceeds the given quota (0 defaults to low space quota)."),
    Flag("auto-compaction-mode", _compaction_mode, "periodic",
         "Interpret 'auto-compaction-retention' one of: periodic|revision. 'periodic' for "
         "duration based retention, defaulting to hours if no time unit is provided "
         "(e.g. '5m'). 'revision' for revision number based retention."),
    Flag("auto-compaction-retention", str, "0",
         "Auto compaction retention for mvcc key value store. 0 means disable auto "
         "compaction."),
    Flag("experimental-initial-corrupt-check", _bool, False,
         "Enable to check data corruption before serving any client/peer traffic."),
    Flag("experimental-corrupt-check-time", _duration, 0.0,
         "Duration of time between cluster corruption check passes (0: none)."),
    Flag("max-request-bytes", _positive_int, 1572864,
         "Maximum client request size in bytes the server will accept."),
    Flag("max-txn-ops", _positive_int, 128,
         "Maximum number of operations permitted in a transaction."),
    Flag("log-level", _log_level, "info",
         "Configures log level. Only supports debug, info, warn, error, panic, or fatal."),
    Flag("logger", _logger, "capnslog",
         "Specify 'zap' for structured logging (JSON lines) or 'capnslog' (text)."),
    Flag("log-outputs", _log_outputs, ["default"],
         "Specify 'stdout' or 'stderr' to skip journald logging even when running under "
         "systemd, or list comma-separated output targets (file paths)."),
    Flag("enable-v2", _bool, False, "Accept etcd V2 client requests."),
    Flag("grpc-transport", _grpc_transport, "native",
         "fastkv: how gRPC is served on the client port: 'native' (HTTP/2 in the event "
         "loop) or 'grpcio' (grpc.aio behind a relay)."),
    Flag("bcrypt-cost", _positive_int, 10,
         "Specify bcrypt algorithm cost factor for auth password hashing."),
    Flag("auth-token", _auth_token, "simple",
         "Specify auth token specific options (simple, or "
         "jwt,pub-key=FILE,priv-key=FILE,sign-method=ALG,ttl=DURATION)."),
    Flag("auth-token-ttl", _positive_int, 300,
         "The lifetime in seconds of the auth token."),
    # security (TLS: fastkv/tlsconfig.py builds the contexts and makes etcd's checks)
    Flag("cert-file", str, "", "Path to the client server TLS cert file."),
    Flag("key-file", str, "", "Path to the client server TLS key file."),
    Flag("client-cert-auth", _bool, False, "Enable client cert authentication."),
    Flag("client-crl-file", str, "", "Path to the client certificate revocation list file."),
    Flag("client-cert-allowed-hostname", str, "",
         "Allowed TLS hostname for client cert authentication."),
    Flag("trusted-ca-file", str, "", "Path to the client server TLS trusted CA cert file."),
    Flag("auto-tls", _bool, False, "Client TLS using generated certificates."),
    Flag("peer-cert-file", str, "", "Path to the peer server TLS cert file."),
    Flag("peer-key-file", str, "", "Path to the peer server TLS key file."),
    Flag("peer-client-cert-auth", _bool, False, "Enable peer client cert authentication."),
    Flag("peer-trusted-ca-file", str, "", "Path to the peer server TLS trusted CA file."),
    Flag("peer-cert-allowed-cn", str, "",
         "Required CN for client certs connecting to the peer endpoint."),
    Flag("peer-cert-allowed-hostname", str, "",
         "Allowed TLS hostname for inter peer authentication."),
    Flag("peer-auto-tls", _bool, False,
         "Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file "
         "are not provided."),
    Flag("peer-crl-file", str, "", "Path to the peer certificate revocation list file."),
    Flag("cipher-suites", _cipher_suites, [],
         "Comma-separated list of supported TLS cipher suites between client/server and peers "
         "(empty will be auto-populated by Go)."),
    Flag("experimental-peer-skip-client-san-verification", _bool, False,
         "Skip verification of SAN field in client certificate for peer connections."),
    Flag("experimental-watch-progress-notify-interval", _duration, 600.0,
         "Duration of periodical watch progress notification."),
    Flag("experimental-watch-slow-consumer-timeout", _duration, 300.0,
         "fastkv's own: a watcher with 128 responses undelivered whose stream takes none for "
         "this long is canceled (cancel_reason 'watch: slow consumer: ...'); a stream that "
         "does not take even that cancel within the same time (10s at least) is closed. "
         "0 keeps slow watchers for ever, as etcd 3.4 does."),
    Flag("experimental-fault-file", str, "",
         "Testing only (fastkv's own; tests/chaos): a file re-read every 100 ms, one directive "
         "a line: a member ID in hex (drop peer traffic with it, both ways), 'fsync-delay S' "
         "(every WAL and snapshot fsync takes S seconds longer), 'clock-jump S' (this member's "
         "clock, e.g. for lease expiry, reads S seconds ahead; negative: behind). A directive "
         "left out is off; a file that does not parse changes nothing (fastkv/faults.py)."),
]
FLAGS_BY_NAME = {f.name: f for f in FLAGS}


@dataclasses.dataclass
class Config:
    config_file: str = ""
    name: str = "default"
    data_dir: str = ""
    wal_dir: str = ""             # "": <data-dir>/member/wal
    listen_client_urls: list = dataclasses.field(default_factory=lambda: ["http://127.0.0.1:2379"])
    advertise_client_urls: list = dataclasses.field(default_factory=lambda: ["http://127.0.0.1:2379"])
    listen_peer_urls: list = dataclasses.field(default_factory=lambda: ["http://127.0.0.1:2380"])
    listen_metrics_urls: list = dataclasses.field(default_factory=list)
    initial_advertise_peer_urls: list = dataclasses.field(
        default_factory=lambda: ["http://127.0.0.1:2380"])
    initial_cluster: dict = dataclasses.field(
        default_factory=lambda: {"default": ["http://127.0.0.1:2380"]})
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    initial_cluster_token_given: bool = False
    discovery: str = ""
    discovery_fallback: str = "proxy"
    discovery_proxy: str = ""
    discovery_srv: str = ""
    discovery_srv_name: str = ""
    proxy: str = "off"
    proxy_failure_wait: int = 5000          # milliseconds, as etcd's
    proxy_refresh_interval: int = 30000
    proxy_dial_timeout: int = 1000
    proxy_write_timeout: int = 5000
    proxy_read_timeout: int = 0
    strict_reconfig_check: bool = True
    force_new_cluster: bool = False
    experimental_snapshot_catchup_entries: int = 5000
    snapshot_count: int = 100000
    heartbeat_interval: int = 100
    election_timeout: int = 1000
    quota_backend_bytes: int = 0
    auto_compaction_mode: str = "periodic"
    experimental_initial_corrupt_check: bool = False
    experimental_corrupt_check_time: float = 0.0
    auto_compaction_retention: str = "0"
    max_request_bytes: int = 1572864

    @property
    def snapshot_catchup_entries(self) -> int:
        return self.experimental_snapshot_catchup_entries
    max_txn_ops: int = 128
    log_level: str = "info"
    logger: str = "capnslog"
    log_outputs: list = dataclasses.field(default_factory=lambda: ["default"])
    enable_v2: bool = False
    grpc_transport: str = "native"
    bcrypt_cost: int = 10
    auth_token_ttl: int = 300
    auth_token: str = "simple"
    # TLS (fastkv/tlsconfig.py)
    cert_file: str = ""
    key_file: str = ""
    client_cert_auth: bool = False
    client_crl_file: str = ""
    client_cert_allowed_hostname: str = ""
    trusted_ca_file: str = ""
    auto_tls: bool = False
    peer_cert_file: str = ""
    peer_key_file: str = ""
    peer_client_cert_auth: bool = False
    peer_trusted_ca_file: str = ""
    peer_cert_allowed_cn: str = ""
    peer_cert_allowed_hostname: str = ""
    peer_auto_tls: bool = False
    peer_crl_file: str = ""
    cipher_suites: list = dataclasses.field(default_factory=list)
    experimental_peer_skip_client_san_verification: bool = False
    experimental_watch_progress_notify_interval: float = 600.0   # seconds
    experimental_watch_slow_consumer_timeout: float = 300.0   # seconds; 0: never
    experimental_fault_file: str = ""


def usage() -> str:
    lines = [f"fastkv {__version__}: an etcd-compatible key-value store",
             "", "Usage: fastkv [flags]", "", "Flags (also as ETCD_<NAME> environment variables):"]
    for f in FLAGS:
        default = f.default
        if isinstance(default, list):
            default = ",".join(default)
        elif isinstance(default, dict):
            default = ",".join(f"{k}={u}" for k, us in default.items() for u in us)
        elif f.parse is _duration:
            default = _duration_text(default)
        lines.append(f"  --{f.name}  (default {default!s})")
        lines.append(f"        {f.help}" + (f" [takes effect with the {f.later} work]" if f.later else ""))
    lines += ["  --version", "        Print the version and exit.", "  -h, --help",
              "        Print this help and exit."]
    return "\n".join(lines)


# etcd's YAML nests the TLS settings: section -> {key in it: flag}
_TLS_SECTIONS = {
    "client-transport-security": {
        "cert-file": "cert-file", "key-file": "key-file", "client-cert-auth": "client-cert-auth",
        "trusted-ca-file": "trusted-ca-file", "auto-tls": "auto-tls",
        "crl-file": "client-crl-file", "allowed-hostname": "client-cert-allowed-hostname"},
    "peer-transport-security": {
        "cert-file": "peer-cert-file", "key-file": "peer-key-file",
        "client-cert-auth": "peer-client-cert-auth", "trusted-ca-file": "peer-trusted-ca-file",
        "auto-tls": "peer-auto-tls", "crl-file": "peer-crl-file",
        "allowed-cn": "peer-cert-allowed-cn", "allowed-hostname": "peer-cert-allowed-hostname"},
}


def _flag_text(value) -> str:
    """A YAML value as the text of its flag."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_flag_text(v) for v in value)
    return "" if value is None else str(value)


def read_config_file(path: str) -> dict[str, str]:
    """etcd's --config-file: a YAML mapping with the flags' names as keys (the TLS
    settings under client-transport-security and peer-transport-security), as flag
    texts. Keys that name no flag are ignored, as etcd's YAML decoding ignores them."""
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"error converting YAML to JSON in {path}: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"the configuration file {path} is not a YAML mapping")
    given: dict[str, str] = {}
    for key, value in doc.items():
        section = _TLS_SECTIONS.get(key)
        if section is not None and isinstance(value, dict):
            for k, v in value.items():
                if k in section and section[k] in FLAGS_BY_NAME and v not in (None, ""):
                    given[section[k]] = _flag_text(v)
        elif key in FLAGS_BY_NAME and key != "config-file" and value is not None:
            given[key] = _flag_text(value)
    return given


def parse(argv: list[str], environ: dict[str, str] | None = None) -> Config:
    """Parse etcd-style flags and ETCD_* environment variables into a Config.

    Raises ConfigError with etcd-like text for an unknown flag or bad value.
    """
    environ = os.environ if environ is None else environ
    given: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg in ("-", "--"):
            raise ConfigError(f"'{arg}' is not a valid flag")
        name = arg.lstrip("-")
        value = None
        if "=" in name:
            name, value = name.split("=", 1)
        flag = FLAGS_BY_NAME.get(name)
        if flag is None:
            raise ConfigError(f"flag provided but not defined: -{name}")
        if value is None:
            if flag.parse is _bool:
                value = "true"
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise ConfigError(f"flag needs an argument: -{name}")
        given[name] = value
        i += 1
    for flag in FLAGS:
        env_name = "ETCD_" + flag.name.upper().replace("-", "_")
        if flag.name not in given and env_name in environ:
            given[flag.name] = environ[env_name]
    if given.get("config-file"):
        # etcd: with a configuration file, the other flags and variables are ignored
        given = {"config-file": given["config-file"], **read_config_file(given["config-file"])}
    cfg = Config()
    for name, value in given.items():
        flag = FLAGS_BY_NAME[name]
        try:
            parsed = flag.parse(value)
        except ValueError as exc:
            detail = f": {exc}" if str(exc) and str(exc) != value else ""
            raise ConfigError(f'invalid value "{value}" for flag -{name}{detail}') from None
        setattr(cfg, name.replace("-", "_"), parsed)
    try:
        from fastkv.compactor import parse_retention
        parse_retention(cfg.auto_compaction_mode, cfg.auto_compaction_retention)
    except ValueError:
        raise ConfigError(f'invalid value "{cfg.auto_compaction_retention}" for flag '
                          f'-auto-compaction-retention (mode {cfg.auto_compaction_mode})'
                          ) from None
    if not cfg.data_dir:
        cfg.data_dir = f"{cfg.name}.fastkv"
    # etcd: discovery replaces the default --initial-cluster; more than one way to
    # bootstrap is refused
    if (cfg.discovery or cfg.discovery_srv) and "initial-cluster" not in given:
        cfg.initial_cluster = {}
    if sum(map(bool, (cfg.discovery, cfg.initial_cluster, cfg.discovery_srv))) > 1:
        raise ConfigError(ERR_CONFLICT_BOOTSTRAP)
    if cfg.proxy == "off" and not (cfg.discovery or cfg.discovery_srv):
        check_local_member(cfg)
    cfg.initial_cluster_token_given = "initial-cluster-token" in given
    if cfg.max_txn_ops < 1:
        raise ConfigError(f'invalid value "{cfg.max_txn_ops}" for flag -max-txn-ops')
    if cfg.election_timeout < 5 * cfg.heartbeat_interval:
        raise ConfigError(f"--election-timeout[{cfg.election_timeout}ms] should be at least as "
                          f"5 times as --heartbeat-interval[{cfg.heartbeat_interval}ms]")
    return cfg


ERR_CONFLICT_BOOTSTRAP = ('multiple discovery or bootstrap flags are set. Choose one of '
                          '"initial-cluster", "discovery" or "discovery-srv"')


def check_local_member(cfg: Config, same_urls: bool = True) -> None:
    """The initial cluster names this member with its advertised peer URLs, and no URL
    twice (also for a cluster found by discovery). same_urls=False: this member's URLs
    may be spelled differently (DNS SRV targets, matched by address)."""
    if cfg.name not in cfg.initial_cluster:
        raise ConfigError(f"couldn't find local name \"{cfg.name}\" in the initial cluster "
                          f"configuration")
    if same_urls and sorted(cfg.initial_cluster[cfg.name]) != sorted(cfg.initial_advertise_peer_urls):
        raise ConfigError(
            f"--initial-cluster has {cfg.name}={','.join(cfg.initial_cluster[cfg.name])} but "
            f"missing from --initial-advertise-peer-urls="
            f"{','.join(cfg.initial_advertise_peer_urls)}")
    seen: dict[str, str] = {}
    for name, urls in cfg.initial_cluster.items():
        for u in urls:
            if u in seen:
                raise ConfigError(f"--initial-cluster has duplicate url {u} "
                                  f"({seen[u]} and {name})")
            seen[u] = name


def parse_or_exit(argv: list[str]) -> Config:
    if any(a in ("-h", "--help", "-help") for a in argv):
        print(usage())
        sys.exit(0)
    if any(a in ("--version", "-version") for a in argv):
        from fastkv import ETCD_SERVER_VERSION
        print(f"fastkv Version: {__version__}\netcd API Version: {ETCD_SERVER_VERSION}\n"
              f"Python Version: {sys.version.split()[0]}")
        sys.exit(0)
    try:
        return parse(argv)
    except ConfigError as exc:
        print(f"fastkv: {exc}", file=sys.stderr)
        print("Try 'fastkv --help' for more information.", file=sys.stderr)
        sys.exit(2)
