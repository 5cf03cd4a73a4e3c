"""fastkv: an etcd-compatible, Raft-replicated key-value store."""

__version__ = "0.1.0"
# What fastkv reports as its etcd version (GET /version, Status): the etcd
# release whose API it implements.
ETCD_SERVER_VERSION = "3.4.23"
ETCD_CLUSTER_VERSION = "3.4.0"
