"""Go's text/tabwriter, as etcdctl uses it for usage and help text.

Tab-terminated cells of consecutive lines form a column as wide as its widest cell plus
the padding (at least ``minwidth``). ``pad_with_tabs`` (Go's flag ``TabIndent`` with
padchar '\\t', etcdctl v3's usage): each cell is followed by tabs up to the column's width
rounded up to a ``tabwidth`` stop; otherwise by spaces (etcdctl v2's help).
"""
from __future__ import annotations


def tabwrite(text: str, *, minwidth: int = 0, tabwidth: int = 8, padding: int = 1,
             pad_with_tabs: bool = False) -> str:
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    widths: list[int] = []

    def pad(cell: str, width: int) -> str:
        if pad_with_tabs:
            cellw = -(-width // tabwidth) * tabwidth
            return cell + "\t" * -(-(cellw - len(cell)) // tabwidth)
        return cell + " " * (width - len(cell))

    def write_lines(line0: int, line1: int) -> None:
        for cells in lines[line0:line1]:
            out.append("".join(pad(cell, widths[j]) if j < len(widths) and j < len(cells) - 1
                               else cell for j, cell in enumerate(cells)))

    def fmt(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write_lines(line0, this)
            line0 = this
            width = minwidth
            while this < line1 and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            fmt(line0, this)
            widths.pop()
            line0 = this
        write_lines(line0, line1)

    fmt(0, len(lines))
    return "\n".join(out)
