"""etcd 3.4's pkg/adt interval tree, ported line for line, for the one answer that
depends on its shape.

etcd keeps each user's permissions in a red-black interval tree of
BytesAffineComparable intervals (the empty byte string sorts after every key)
and asks ``Contains`` whether a requested range is covered. For a well-formed
range the answer is "the range lies in the union of the permissions", which
the auth store computes directly. For an inverted range (key >= range_end),
``Contains`` prunes its walk by subtree maxima that do not apply to it, so
etcd's answer depends on how the tree happened to balance: the auth store asks
this port, built by the same inserts in the same order, for those requests.
Insert, the rotations and updateMax keep Go's exact order of operations.
"""
from __future__ import annotations

__all__ = ["IntervalTree", "affine_cmp"]


def affine_cmp(a: bytes, b: bytes) -> int:
    """adt.BytesAffineComparable.Compare: bytes order, with b"" after everything."""
    if not a:
        return 0 if not b else 1
    if not b:
        return -1
    return (a > b) - (a < b)


def _interval_cmp(b1: bytes, e1: bytes, b2: bytes, e2: bytes) -> int:
    """adt.Interval.Compare: -1 left of, 1 right of, 0 overlapping."""
    if affine_cmp(b1, b2) < 0 and affine_cmp(e1, b2) <= 0:
        return -1
    if affine_cmp(b1, e2) >= 0:
        return 1
    return 0


class _Node:
    __slots__ = ("begin", "end", "max", "left", "right", "parent", "red")

    def __init__(self, begin, end, nil):
        self.begin = begin
        self.end = end
        self.max = end
        self.left = self.right = self.parent = nil
        self.red = True


class IntervalTree:
    def __init__(self):
        nil = _Node(b"", b"", None)
        nil.red = False
        nil.max = None
        self.nil = nil
        self.root = nil

    def insert(self, begin: bytes, end: bytes) -> None:
        nil = self.nil
        z = _Node(begin, end, nil)
        y = nil
        x = self.root
        while x is not nil:
            y = x
            x = x.left if affine_cmp(begin, x.begin) < 0 else x.right
        z.parent = y
        if y is nil:
            self.root = z
        else:
            if affine_cmp(begin, y.begin) < 0:
                y.left = z
            else:
                y.right = z
            self._update_max(y)
        z.red = True
        self._insert_fixup(z)

    def _update_max(self, x: _Node) -> None:
        nil = self.nil
        while x is not nil:
            old = x.max
            m = x.end
            if x.left is not nil and affine_cmp(x.left.max, m) > 0:
                m = x.left.max
            if x.right is not nil and affine_cmp(x.right.max, m) > 0:
                m = x.right.max
            if affine_cmp(old, m) == 0:
                break
            x.max = m
            x = x.parent

    def _insert_fixup(self, z: _Node) -> None:
        while z.parent.red:
            grand = z.parent.parent
            if z.parent is grand.left:
                y = grand.right
                if y.red:
                    y.red = False
                    z.parent.red = False
                    grand.red = True
                    z = grand
                else:
                    if z is z.parent.right:
                        z = z.parent
                        self._rotate_left(z)
                    z.parent.red = False
                    z.parent.parent.red = True
                    self._rotate_right(z.parent.parent)
            else:
                y = grand.left
                if y.red:
                    y.red = False
                    z.parent.red = False
                    grand.red = True
                    z = grand
                else:
                    if z is z.parent.left:
                        z = z.parent
                        self._rotate_right(z)
                    z.parent.red = False
                    z.parent.parent.red = True
                    self._rotate_left(z.parent.parent)
        self.root.red = False

    def _rotate_left(self, x: _Node) -> None:
        nil = self.nil
        if x.right is nil:
            return
        y = x.right
        x.right = y.left
        if y.left is not nil:
            y.left.parent = x
        self._update_max(x)
        self._replace_parent(x, y)
        y.left = x
        self._update_max(y)

    def _rotate_right(self, x: _Node) -> None:
        nil = self.nil
        if x.left is nil:
            return
        y = x.left
        x.left = y.right
        if y.right is not nil:
            y.right.parent = x
        self._update_max(x)
        self._replace_parent(x, y)
        y.right = x
        self._update_max(y)

    def _replace_parent(self, x: _Node, y: _Node) -> None:
        y.parent = x.parent
        if x.parent is self.nil:
            self.root = y
        else:
            if x is x.parent.left:
                x.parent.left = y
            else:
                x.parent.right = y
            self._update_max(x.parent)
        x.parent = y

    def _visit(self, x: _Node, begin: bytes, end: bytes, seen: list) -> None:
        """intervalNode.visit: every node the walk reaches overlapping [begin, end), in order."""
        if x is self.nil:
            return
        v = _interval_cmp(begin, end, x.begin, x.end)
        if v < 0:
            self._visit(x.left, begin, end, seen)
        elif v > 0:
            if _interval_cmp(x.begin, x.max, begin, end) == 0:
                self._visit(x.left, begin, end, seen)
                self._visit(x.right, begin, end, seen)
        else:
            self._visit(x.left, begin, end, seen)
            seen.append(x)
            self._visit(x.right, begin, end, seen)

    def intersects(self, begin: bytes, end: bytes) -> bool:
        nil = self.nil
        x = self.root
        while x is not nil and _interval_cmp(begin, end, x.begin, x.end) != 0:
            if x.left is not nil and affine_cmp(x.left.max, begin) > 0:
                x = x.left
            else:
                x = x.right
        return x is not nil

    def contains(self, begin: bytes, end: bytes) -> bool:
        seen: list[_Node] = []
        self._visit(self.root, begin, end, seen)
        if not seen:
            return False
        min_begin, max_end = seen[0].begin, seen[0].end
        for n in seen[1:]:
            if affine_cmp(max_end, n.begin) < 0:
                return False
            if affine_cmp(n.end, max_end) > 0:
                max_end = n.end
        return affine_cmp(max_end, end) >= 0 and affine_cmp(min_begin, begin) <= 0
