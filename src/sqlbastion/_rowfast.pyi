# Types of the C extension built from _rowfast*.c (semantics: sqlbastion/masking/rowref.py).
from collections.abc import Callable

_Masker = Callable[[bytes | None], bytes | bytearray | None]
_Entry = tuple[int, int, int, _Masker, list[int] | None] | None

OP_CALL: int
OP_FULL: int
OP_KEEP: int
OP_MOBILE: int
OP_KEEP_DIGITS: int
OP_EMAIL: int
OP_NAME: int
MAX_KEEP: int
LAYOUT_TEMPORAL: int
LAYOUT_LENENC: int

def pg_rewrite(
    data: bytes | bytearray | memoryview,
    pos: int,
    end: int,
    columns: tuple[_Entry, ...],
    limit: int,
    max_length: int,
    out: bytearray,
    /,
) -> tuple[int, int, int]: ...
def mysql_rewrite(
    data: bytes | bytearray | memoryview,
    pos: int,
    end: int,
    columns: tuple[_Entry, ...],
    limit: int,
    seq: int,
    eof_limit: int,
    out: bytearray,
    /,
) -> tuple[int, int, int, int]: ...
def mysql_binary_rewrite(
    data: bytes | bytearray | memoryview,
    pos: int,
    end: int,
    columns: tuple[_Entry, ...],
    layout: tuple[int, ...],
    limit: int,
    seq: int,
    eof_limit: int,
    out: bytearray,
    /,
) -> tuple[int, int, int, int]: ...
