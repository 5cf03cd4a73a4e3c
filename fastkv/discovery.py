"""Bootstrapping a new cluster by discovery: ``--discovery`` and ``--discovery-srv``.

Runs before the member starts, and only for a member with no WAL yet that starts a
new cluster (etcd does the same: a restarted member ignores the discovery flags).

``--discovery <url>`` is etcd's v2 discovery protocol (etcd's v2discovery) against
the v2 keys API of any fastkv or etcd with v2 enabled. The URL's path is the token
directory, e.g. ``http://host:2379/v2/keys/discovery/<token>``; an operator first
sets ``<token>/_config/size`` to the cluster size. Each member then

1. reads ``_config/size`` and the registered members (a full cluster: error);
2. registers itself: creates ``<token>/<member id hex>`` (``prevExist=false``) with
   its ``name=peer-url,...``; the member ID is computed from its advertised peer URLs
   and the discovery URL, which is the cluster token;
3. waits (a recursive watch on the token directory) until ``size`` members have
   registered; the first ``size`` by creation index are the initial cluster.

A member that finds the cluster full when it starts falls back, with
``--discovery-fallback proxy`` (the default, as etcd's), to a v2 proxy for that
cluster; with ``exit`` it stops with ``discovery: cluster is full``. Connection
failures are retried with etcd's exponential back-off; ``--discovery-proxy`` names an
HTTP proxy for the discovery traffic.

``--discovery-srv <domain>`` reads the initial cluster from DNS SRV records
``_etcd-server-ssl._tcp.<domain>`` (https peer URLs) and ``_etcd-server._tcp.<domain>``
(http), ``-<name>`` appended to the service with ``--discovery-srv-name``
(fastkv/dnssrv.py queries the nameserver). A record whose target resolves to one of
this member's advertised peer URLs is this member; the others are named ``0``,
``1``, ... until they publish their names. The cluster token stays
``--initial-cluster-token``.

Errors are etcd's (``discovery: ...``); :func:`prepare` raises DiscoveryError.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import ssl
import time
from urllib.parse import quote, urlencode, urlsplit

from fastkv import dnssrv
from fastkv.config import Config, ConfigError, _initial_cluster, check_local_member
from fastkv.identity import member_id

log = logging.getLogger("fastkv.discovery")

# etcd's v2discovery errors, same words
ERR_INVALID_URL = "discovery: invalid URL"
ERR_BAD_SIZE_KEY = "discovery: size key is bad"
ERR_SIZE_NOT_FOUND = "discovery: size key not found"
ERR_DUPLICATE_ID = "discovery: found duplicate id"
ERR_DUPLICATE_NAME = "discovery: found duplicate name"
ERR_FULL_CLUSTER = "discovery: cluster is full"
ERR_TOO_MANY_RETRIES = "discovery: too many retries"
ERR_BAD_DISCOVERY_ENDPOINT = "discovery: bad discovery endpoint"

REQUEST_TIMEOUT = 5.0          # the v2 client's DefaultRequestTimeout
MAX_EXPONENTIAL_RETRIES = 8    # back-off doubles from 1 s up to 2^8 s, as etcd's
ERRORCODE_KEY_NOT_FOUND = 100
ERRORCODE_NODE_EXIST = 105


class DiscoveryError(Exception):
    pass


class ClusterFull(DiscoveryError):
    """The discovery token already has ``size`` members; ``peer_urls`` are theirs (what
    a proxy falling back needs)."""

    def __init__(self, peer_urls: list[str]):
        super().__init__(ERR_FULL_CLUSTER)
        self.peer_urls = peer_urls


class _Unreachable(Exception):
    """The discovery service did not answer (etcd's client.ClusterError): retried."""


# ---- what the member does before it starts ----------------------------------------------

def prepare(cfg: Config, sleep=time.sleep) -> list[str] | None:
    """Resolve how this process starts. Returns None to run a member (its
    ``cfg.initial_cluster`` filled in by discovery when that was asked for), or the
    cluster's peer URLs to run a v2 proxy for (``--proxy on|readonly``, or a member
    that found its discovery cluster full with ``--discovery-fallback proxy``)."""
    kept = _kept_role(cfg)
    if kept == "member":
        return None
    if cfg.proxy != "off":
        if kept == "proxy":
            return []   # fastkv/proxy.py reads the peer URLs the proxy kept
        if cfg.discovery:
            return _peer_urls(get_cluster(cfg.discovery, cfg.discovery_proxy, sleep=sleep))
        if cfg.discovery_srv:
            return _peer_urls(srv_cluster(cfg, proxy=True))
        return [u for urls in cfg.initial_cluster.values() for u in urls]
    if not (cfg.discovery or cfg.discovery_srv):
        return None
    if cfg.initial_cluster_state != "new":
        return None   # a join: the cluster tells the member who it is
    if cfg.discovery:
        mine = ",".join(f"{cfg.name}={u}" for u in sorted(cfg.initial_advertise_peer_urls))
        mid = member_id(cfg.initial_advertise_peer_urls, cfg.discovery)
        try:
            found = join_cluster(cfg.discovery, cfg.discovery_proxy, mid, mine, sleep=sleep)
        except ClusterFull as full:
            if cfg.discovery_fallback != "proxy":
                raise
            log.warning("discovery cluster is full, falling back to proxy")
            return full.peer_urls
        cfg.initial_cluster = _parse_cluster(found)
        cfg.initial_cluster_token = cfg.discovery   # etcd: the discovery URL is the token
        cfg.initial_cluster_token_given = True
    else:
        cfg.initial_cluster = _parse_cluster(",".join(srv_cluster(cfg)))
    try:
        check_local_member(cfg, same_urls=not cfg.discovery_srv)
    except ConfigError as exc:
        raise DiscoveryError(str(exc)) from None
    log.info("bootstrapping cluster of %d members found by discovery: %s",
             len(cfg.initial_cluster),
             ",".join(f"{n}={u}" for n, us in sorted(cfg.initial_cluster.items()) for u in us))
    return None


def _kept_role(cfg: Config) -> str | None:
    """etcd's identifyDataDirOrDie: a data directory that holds a member's data starts a
    member, one that holds a proxy's starts a proxy, whatever --proxy says (a proxy
    without --proxy forwards everything, as ``on``); an empty one follows the flags.
    Returns "member", "proxy" (with the cluster it kept) or None."""
    if os.path.isdir(os.path.join(cfg.data_dir, "member")):
        if cfg.proxy != "off":
            log.warning("found a member's data in %s: ignoring --proxy %s", cfg.data_dir,
                        cfg.proxy)
            cfg.proxy = "off"
        return "member"
    if not os.path.isdir(os.path.join(cfg.data_dir, "proxy")):
        return None
    if cfg.proxy == "off":
        log.warning("found a proxy's data in %s: starting as a proxy", cfg.data_dir)
        cfg.proxy = "on"
    from fastkv.proxy import read_cluster_file
    try:
        kept = read_cluster_file(cfg.data_dir)
    except ValueError as exc:
        raise DiscoveryError(str(exc)) from None
    if kept is None:
        return None
    if cfg.discovery or cfg.discovery_srv:
        log.warning("the proxy keeps its cluster in %s/proxy/cluster: ignoring discovery",
                    cfg.data_dir)
    return "proxy"


def _parse_cluster(text: str) -> dict[str, list[str]]:
    try:
        return _initial_cluster(text)
    except ValueError:
        raise DiscoveryError(ERR_INVALID_URL) from None


def _peer_urls(cluster: str | list[str]) -> list[str]:
    parts = cluster.split(",") if isinstance(cluster, str) else cluster
    return [p.split("=", 1)[1] for p in parts if "=" in p]


# ---- etcd's v2 discovery protocol -------------------------------------------------------

class _Discovery:
    def __init__(self, durl: str, proxy: str, mid: int = 0, sleep=time.sleep):
        u = urlsplit(durl)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise DiscoveryError(ERR_INVALID_URL)
        self.scheme, self.host = u.scheme, u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.cluster = u.path.rstrip("/") or "/"   # the token directory: the URL's path
        self.proxy = urlsplit(proxy) if proxy else None
        if self.proxy is not None and (self.proxy.scheme not in ("http", "https")
                                       or not self.proxy.hostname):
            raise DiscoveryError(f"discovery: invalid proxy URL {proxy!r}")
        self.self_key = f"{self.cluster}/{mid:x}"
        self.dir_key = ""
        self.retries = 0
        self.sleep = sleep

    # HTTP: one connection per request; a watch waits as long as it takes
    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        ctx = ssl.create_default_context() if self.scheme == "https" else None
        if self.proxy is None:
            if ctx is not None:
                return http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                                   context=ctx)
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        pport = self.proxy.port or 80
        if ctx is not None:   # https through the proxy: a CONNECT tunnel
            conn = http.client.HTTPSConnection(self.proxy.hostname, pport, timeout=timeout,
                                               context=ctx)
            conn.set_tunnel(self.host, self.port)
            return conn
        return http.client.HTTPConnection(self.proxy.hostname, pport, timeout=timeout)

    def _request(self, method: str, key: str, query: dict | None = None,
                 form: dict | None = None, timeout: float | None = REQUEST_TIMEOUT) -> dict:
        """One v2 keys request; returns the answer's JSON (an error answer too, with
        its errorCode). Raises _Unreachable for no answer, DiscoveryError for an
        answer that is not the v2 keys API's."""
        target = quote(key) + ("?" + urlencode(query) if query else "")
        if self.proxy is not None and self.scheme == "http":
            target = f"http://{self.host}:{self.port}{target}"
        body = urlencode(form).encode() if form is not None else None
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
        conn = self._connection(timeout)
        try:
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _Unreachable(f"{self.scheme}://{self.host}:{self.port}: {exc}") from None
        finally:
            conn.close()
        if resp.status >= 500 and resp.status != 507:
            raise _Unreachable(f"{self.scheme}://{self.host}:{self.port}: HTTP {resp.status}")
        try:
            answer = json.loads(raw)
        except ValueError:
            raise DiscoveryError(ERR_BAD_DISCOVERY_ENDPOINT) from None
        if not isinstance(answer, dict):
            raise DiscoveryError(ERR_BAD_DISCOVERY_ENDPOINT)
        return answer

    def _retry(self, why: BaseException) -> None:
        """etcd's checkClusterRetry/waitNodesRetry: wait 2^retries seconds."""
        if self.retries >= 1 << 32:
            raise DiscoveryError(ERR_TOO_MANY_RETRIES)
        wait = 1 << min(self.retries, MAX_EXPONENTIAL_RETRIES)
        log.warning("discovery service unreachable (%s); retrying in %d s", why, wait)
        self.retries += 1
        self.sleep(wait)

    def check_cluster(self) -> tuple[list[dict], int, int]:
        """(registered members by creation index, size, etcd index); ClusterFull when
        ``size`` others registered before us."""
        while True:
            try:
                answer = self._request("GET", f"{self.cluster}/_config/size")
                if answer.get("errorCode") == ERRORCODE_KEY_NOT_FOUND:
                    raise DiscoveryError(ERR_SIZE_NOT_FOUND)
                if "errorCode" in answer:
                    raise DiscoveryError(f"discovery: {answer.get('message', answer)}")
                try:
                    size = int((answer.get("node") or {}).get("value", ""), 10)
                except (TypeError, ValueError):
                    raise DiscoveryError(ERR_BAD_SIZE_KEY) from None
                listing = self._request("GET", self.cluster)
                break
            except _Unreachable as exc:
                self._retry(exc)
        if "errorCode" in listing:
            raise DiscoveryError(f"discovery: {listing.get('message', listing)}")
        # the token directory as the keys API names it (the URL's path less /v2/keys)
        self.dir_key = str((listing.get("node") or {}).get("key", "")).rstrip("/")
        index = int(listing.get("node", {}).get("modifiedIndex", 0))
        index = max(index, *(int(n.get("modifiedIndex", 0))
                             for n in listing["node"].get("nodes", []) or [{}]))
        nodes = [n for n in (listing.get("node") or {}).get("nodes") or []
                 if _base(n.get("key", "")) != "_config"]
        nodes.sort(key=lambda n: int(n.get("createdIndex", 0)))
        for i, n in enumerate(nodes):
            if _base(n.get("key", "")) == _base(self.self_key):
                break
            if i >= size - 1:
                raise ClusterFull(_peer_urls(_values(nodes[:size])))
        return nodes, size, index

    def create_self(self, contents: str) -> None:
        while True:
            try:
                answer = self._request("PUT", self.self_key, {"prevExist": "false"},
                                       {"value": contents})
                break
            except _Unreachable as exc:
                self._retry(exc)
        if answer.get("errorCode") == ERRORCODE_NODE_EXIST:
            raise DiscoveryError(ERR_DUPLICATE_ID)
        if "errorCode" in answer:
            raise DiscoveryError(f"discovery: {answer.get('message', answer)}")

    def wait_nodes(self, nodes: list[dict], size: int, index: int) -> list[dict]:
        found = {n["key"]: n for n in nodes[:size]}
        for n in found.values():
            log.info("found %s from discovery server: %s",
                     "self" if _base(n["key"]) == _base(self.self_key) else "peer",
                     n.get("value"))
        wait_index = index + 1
        while len(found) < size:
            log.info("found %d of %d peers from discovery server; waiting for more",
                     len(found), size)
            try:
                answer = self._request("GET", self.cluster, {
                    "wait": "true", "recursive": "true", "waitIndex": str(wait_index)},
                    timeout=None)
            except _Unreachable as exc:
                self._retry(exc)
                nodes, size, index = self.check_cluster()   # etcd's waitNodesRetry
                return self.wait_nodes(nodes, size, index)
            if "errorCode" in answer:
                raise DiscoveryError(f"discovery: {answer.get('message', answer)}")
            node = answer.get("node") or {}
            wait_index = int(node.get("modifiedIndex", wait_index)) + 1
            key = node.get("key", "")
            if (answer.get("action") in ("create", "set") and not node.get("dir")
                    and key.rsplit("/", 1)[0] == self.dir_key and _base(key) != "_config"
                    and key not in found):
                log.info("found peer from discovery server: %s", node.get("value"))
                found[key] = node
        return sorted(found.values(), key=lambda n: int(n.get("createdIndex", 0)))


def _base(key: str) -> str:
    return key.rstrip("/").rsplit("/", 1)[-1]


def _values(nodes: list[dict]) -> str:
    return ",".join(str(n.get("value", "")) for n in nodes)


def _nodes_to_cluster(nodes: list[dict], size: int) -> str:
    text = _values(nodes)
    cluster = _parse_cluster(text)
    if len(cluster) != size:
        raise DiscoveryError(ERR_DUPLICATE_NAME)
    return text


def join_cluster(durl: str, proxy: str, mid: int, config: str, sleep=time.sleep) -> str:
    """etcd's v2discovery.JoinCluster: register ``config`` (name=peer-url,...) as member
    ``mid`` and return the whole initial cluster once ``size`` members registered."""
    d = _Discovery(durl, proxy, mid, sleep)
    d.check_cluster()   # a full cluster: do not register
    d.create_self(config)
    nodes, size, index = d.check_cluster()
    return _nodes_to_cluster(d.wait_nodes(nodes, size, index), size)


def get_cluster(durl: str, proxy: str, sleep=time.sleep) -> str:
    """etcd's v2discovery.GetCluster (for a proxy): the cluster, once complete."""
    d = _Discovery(durl, proxy, 0, sleep)
    try:
        nodes, size, index = d.check_cluster()
    except ClusterFull as full:
        return ",".join(f"p{i}={u}" for i, u in enumerate(full.peer_urls))
    return _nodes_to_cluster(d.wait_nodes(nodes, size, index), size)


# ---- DNS SRV ------------------------------------------------------------------------------

def _tcp_addrs(host: str, port: int) -> set[str]:
    try:
        infos = socket.getaddrinfo(host.rstrip("."), port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DiscoveryError(f"lookup {host}: {exc}") from None
    return {f"{i[4][0]}:{i[4][1]}" for i in infos}


def _srv_records(service: str, scheme: str, name: str, domain: str,
                 mine: dict[str, str]) -> tuple[list[str], list[str]]:
    """pkg/srv.GetCluster for one service: 'name=url' for each record, and the URLs of
    records that are this member (matched by resolved address)."""
    records = dnssrv.lookup_srv(service, "tcp", domain)
    parts, me, temp = [], [], 0
    for _prio, _weight, port, target in records:
        host = target.rstrip(".")
        url_host = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        ours = [mine[a] for a in _tcp_addrs(host, port) if a in mine]
        if ours:
            if not ours[0].startswith(scheme + "://"):
                raise DiscoveryError(
                    f"bootstrap at {scheme}://{url_host} from DNS for {service} has scheme "
                    f"mismatch with expected peer {ours[0]}")
            member = name
            me.append(f"{scheme}://{url_host}")
        else:
            member = str(temp)
            temp += 1
        parts.append(f"{member}={scheme}://{url_host}")
    return parts, me


def srv_cluster(cfg: Config, proxy: bool = False) -> list[str]:
    """The initial cluster from the SRV records ('name=url' each): https
    (_etcd-server-ssl) and http (_etcd-server) together; an error when both lookups
    fail, or (for a member) when no record is this member."""
    suffix = f"-{cfg.discovery_srv_name}" if cfg.discovery_srv_name else ""
    mine: dict[str, str] = {}
    if not proxy:
        for url in cfg.initial_advertise_peer_urls:
            u = urlsplit(url)
            for addr in _tcp_addrs(u.hostname or "", u.port or 2380):
                mine[addr] = url
    parts: list[str] = []
    errors: list[str] = []
    temp_base = 0
    for scheme, service in (("https", "etcd-server-ssl" + suffix), ("http", "etcd-server" + suffix)):
        try:
            found, _me = _srv_records(service, scheme, cfg.name, cfg.discovery_srv, mine)
        except dnssrv.SRVLookupError as exc:
            errors.append(str(exc))
            continue
        for p in found:   # the temporary names go on across both services
            n, url = p.split("=", 1)
            if n != cfg.name:
                n = str(temp_base)
                temp_base += 1
            parts.append(f"{n}={url}")
    if len(errors) == 2:
        raise DiscoveryError(f"error querying DNS SRV records for _etcd-server{suffix} "
                             f"{errors[0]} {errors[1]}")
    if not proxy and not any(p.split("=", 1)[0] == cfg.name for p in parts):
        raise DiscoveryError(f"cannot find local etcd member \"{cfg.name}\" in SRV records")
    log.info("DNS SRV %s gave the cluster %s", cfg.discovery_srv, ",".join(parts))
    return parts
