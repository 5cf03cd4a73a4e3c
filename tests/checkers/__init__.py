"""History checkers shared by the deterministic simulator (tests/raft/sim.py) and the
real-process chaos tests: linearizability of client histories (linearizability.py), strict
serializability of list-append txn histories (append.py)."""
