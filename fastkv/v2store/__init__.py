"""etcd 3.4's v2 store: the /v2/keys tree as a deterministic state machine."""
from fastkv.v2store.errors import V2Error
from fastkv.v2store.store import V2Store, Watcher, Event

__all__ = ["V2Error", "V2Store", "Watcher", "Event"]
