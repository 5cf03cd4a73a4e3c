"""fastkvctl with ETCDCTL_API=2: etcdctl 3.4's v2 mode over etcd's v2 HTTP API.

main.py (the App and its command table), commands.py (the command bodies),
client.py (etcd's v2 HTTP client: endpoints, failover, sync, keys and members),
flags.py (urfave/cli v1's flag parsing and help), gostd.py (the Go formatting
etcdctl's output inherits), srv.py (DNS SRV discovery).
"""
