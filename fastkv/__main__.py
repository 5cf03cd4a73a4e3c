"""`fastkv` / `python -m fastkv`: run one member with etcd's flags."""
from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from fastkv import config, discovery, logsetup
from fastkv.errors import ErrStopped, StorageCorruption
from fastkv.tlsconfig import TLSConfigError

log = logging.getLogger("fastkv")

# The cyclic garbage collector's generation-0 threshold. CPython's default (700
# container allocations) makes a busy member collect hundreds of times a second:
# a put allocates dozens of short-lived containers (request and response dicts,
# futures, tasks), so with the default the collector took ~11% of the event loop
# under gRPC puts, and every few seconds a full collection over the whole store
# stalled it for ~50 ms (bench/README.md, "Garbage collection"). Nearly all of it is
# freed by reference counting; cycles are rare and may wait a little longer.
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_loaded_state() -> None:
    """Move everything alive now (the store loaded from the snapshot and WAL, modules,
    configuration) out of the collector's sight: a full collection then only looks at
    what was allocated since, instead of walking a million-key store for nothing."""
    gc.freeze()


async def _serve(cfg: config.Config, proxy_peer_urls: list[str] | None = None) -> int:
    if proxy_peer_urls is not None:   # a v2 proxy, not a member (fastkv/proxy.py)
        from fastkv.proxy import run_proxy
        return await run_proxy(cfg, proxy_peer_urls)
    from fastkv.server import Server
    server = Server(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_stop)
    # start() waits for a leader and to catch up, which may take long or forever (no
    # quorum): a stop request ends the wait.
    starting = asyncio.ensure_future(server.start())
    stopping = asyncio.ensure_future(server.stopped.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done() and not starting.cancelled() and starting.exception() is None:
            freeze_loaded_state()
        if not starting.done():
            starting.cancel()
        try:
            await starting
        except (asyncio.CancelledError, ErrStopped):
            if server.fatal is None:
                log.info("stopped before the member was ready")
    except BaseException:
        stopping.cancel()
        await server.stop()
        raise
    await stopping
    await server.stop()
    if server.fatal is not None:
        logging.getLogger("fastkv").critical("stopping after a fatal error: %r", server.fatal)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["gateway"]:   # `fastkv gateway start --endpoints=...` (fastkv/gateway.py)
        from fastkv.gateway import main as gateway_main
        return gateway_main(argv[1:])
    cfg = config.parse_or_exit(argv)
    try:
        logsetup.configure(cfg.log_level, cfg.logger, cfg.log_outputs)
    except OSError as exc:   # a --log-outputs file that cannot be opened
        print(f"fastkv: cannot open the log output: {exc}", file=sys.stderr)
        return 1
    tune_gc()
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # uvloop is a dependency; plain asyncio still works without it
        pass
    try:
        # before the member starts: bootstrap by discovery, or find the cluster to proxy
        proxy_peer_urls = discovery.prepare(cfg)
    except discovery.DiscoveryError as exc:
        print(f"fastkv: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:   # stopped while waiting for the discovery service
        return 130
    try:
        return asyncio.run(_serve(cfg, proxy_peer_urls))
    except StorageCorruption as exc:
        print(f"fastkv: refusing to start: {exc}", file=sys.stderr)
        return 1
    except TLSConfigError as exc:   # etcd's start-up refusals (fastkv/tlsconfig.py)
        print(f"fastkv: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"fastkv: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
