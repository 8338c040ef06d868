"""Text from outside (names from the database or storage, servers' messages) made safe to put in a log line.

A name may hold a newline that starts a forged log line, a carriage return or an escape sequence
that hides one on a terminal, or a bidi control that reverses it. Every character Python would not
print as it is (controls, separators, format characters) is shown as its escape, as `repr` does.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` with every unprintable character but the space escaped: `\\n`, `\\x1b`, `\\u2028`."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)
