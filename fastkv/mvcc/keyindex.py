"""The ordered key index used by the MVCC store (see csrc/keyindex.pyx).

fastkv/mvcc/keyindex_ref.py is a pure-Python reference used only by tests.
"""
from fastkv.mvcc._keyindex import KeyIndex

__all__ = ["KeyIndex"]
