"""Typed descriptions of the C structs that cross the VFIO and iommufd ioctl boundary.

A :class:`Layout` names a struct, its fields (name, byte offset, kind) and its size, and turns
bytes into ``dict``s and back.  It exists because the daemon never gets typed arguments: it
reads raw bytes out of the caller's memory, often fewer than the struct's size (the caller's
``argsz``/``size`` decides how much it sent), and must write back exactly the bytes the kernel
would.  So decoding a short buffer is the normal case, not an error: :meth:`Layout.unpack`
returns only the fields that lie entirely inside the bytes it was given.

Everything is little endian (x86-64, the only ABI the project emulates) and the offsets are
the C ones, naturally aligned, so a layout built with :meth:`Layout.natural` matches what gcc
computes; the unit tests compile the real header and compare.

The engine decodes and encodes one of these per ioctl, so each layout precompiles
``struct.Struct`` objects: one for the whole struct, one per prefix length (short input) and
one per field (single-field write-back).
"""
from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

__all__ = [
    "FieldKind",
    "U8",
    "U16",
    "U32",
    "U64",
    "S32",
    "S64",
    "PTR",
    "BYTES",
    "Field",
    "FieldSpec",
    "FieldValue",
    "TrailingArray",
    "Layout",
]

FieldValue: TypeAlias = int | bytes
"""A decoded field: an ``int`` for numbers and pointers, ``bytes`` for byte arrays."""


class FieldKind(enum.Enum):
    """C type of a field.  ``PTR`` is a ``__u64`` holding a user pointer (shown in hex)."""

    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    U64 = "u64"
    S32 = "s32"
    S64 = "s64"
    PTR = "ptr"
    BYTES = "bytes"

    @property
    def struct_code(self) -> str:
        """The ``struct`` module format character for one element of this kind."""
        return _STRUCT_CODE[self]

    @property
    def natural_size(self) -> int:
        """Size in bytes of one element (1 for ``BYTES``, whose length is per field)."""
        return _NATURAL_SIZE[self]


_STRUCT_CODE: Final[Mapping[FieldKind, str]] = {
    FieldKind.U8: "B",
    FieldKind.U16: "H",
    FieldKind.U32: "I",
    FieldKind.U64: "Q",
    FieldKind.S32: "i",
    FieldKind.S64: "q",
    FieldKind.PTR: "Q",
    FieldKind.BYTES: "s",
}
_NATURAL_SIZE: Final[Mapping[FieldKind, int]] = {
    FieldKind.U8: 1,
    FieldKind.U16: 2,
    FieldKind.U32: 4,
    FieldKind.U64: 8,
    FieldKind.S32: 4,
    FieldKind.S64: 8,
    FieldKind.PTR: 8,
    FieldKind.BYTES: 1,
}

# Short aliases so layout tables read like the C declarations they mirror.
U8: Final = FieldKind.U8
U16: Final = FieldKind.U16
U32: Final = FieldKind.U32
U64: Final = FieldKind.U64
S32: Final = FieldKind.S32
S64: Final = FieldKind.S64
PTR: Final = FieldKind.PTR
BYTES: Final = FieldKind.BYTES

FieldSpec: TypeAlias = tuple[str, FieldKind] | tuple[str, FieldKind, int]
"""``(name, kind)``, or ``(name, BYTES, length)`` for byte arrays: :meth:`Layout.natural` input."""


@dataclass(frozen=True, slots=True)
class Field:
    """One member of a struct: where it is, what C type it has, how many bytes it covers."""

    name: str
    offset: int
    kind: FieldKind
    size: int = field(default=0)

    def __post_init__(self) -> None:
        if self.kind is FieldKind.BYTES:
            if self.size <= 0:
                raise ValueError(f"bytes field {self.name!r} needs a positive size")
        elif self.size == 0:
            object.__setattr__(self, "size", self.kind.natural_size)
        elif self.size != self.kind.natural_size:
            raise ValueError(
                f"field {self.name!r}: {self.kind.value} is {self.kind.natural_size} bytes, "
                f"not {self.size}"
            )
        if self.offset < 0:
            raise ValueError(f"field {self.name!r} has a negative offset")

    @property
    def end(self) -> int:
        """Offset one past the last byte (C ``offsetofend``)."""
        return self.offset + self.size

    @property
    def alignment(self) -> int:
        """Natural alignment the C compiler gives this member."""
        return self.kind.natural_size

    @property
    def struct_format(self) -> str:
        """``struct`` format of this field alone, without byte-order prefix."""
        if self.kind is FieldKind.BYTES:
            return f"{self.size}s"
        return self.kind.struct_code

    @property
    def default(self) -> FieldValue:
        """Value an unset field packs as: zero, like a ``memset(0)`` C struct."""
        return b"" if self.kind is FieldKind.BYTES else 0


@dataclass(frozen=True, slots=True)
class TrailingArray:
    """A C flexible array member (``data[]``) that starts right after the fixed struct.

    ``element`` describes one entry when every entry has the same shape (e.g. an IOVA range);
    ``None`` means the bytes are interpreted by flags (e.g. ``vfio_irq_set.data``: u8 bools or
    s32 eventfds).
    """

    name: str
    element: Layout | None = None


def _describe_value(kind: FieldKind, name: str, value: FieldValue) -> str:
    if isinstance(value, bytes):
        return value.hex() if value else "''"
    if kind is FieldKind.PTR or kind is FieldKind.U64 or "flags" in name:
        return hex(value)
    return str(value)


class Layout:
    """A C struct: ordered fields at fixed offsets, a size, and the minimum size callers send.

    ``size`` is the struct's size in the *current upstream* header (the size the emulated
    kernel knows, its ``ksize``/``sizeof``).  ``min_size`` is the smallest ``argsz``/``size``
    the kernel accepts (``minsz``: the end of the last mandatory field); it equals ``size``
    unless given.  Unions are expressed with ``aliases`` (another name for the same field).
    """

    __slots__ = (
        "name",
        "fields",
        "size",
        "min_size",
        "min_field",
        "aliases",
        "trailing",
        "doc",
        "_names",
        "_name_set",
        "_names_defaults",
        "_by_name",
        "_field_structs",
        "_full_struct",
        "_prefix_structs",
        "_fields_within",
        "_bytes_limits",
    )

    def __init__(
        self,
        name: str,
        fields: Iterable[Field],
        size: int,
        *,
        min_size: int | None = None,
        min_through: str | None = None,
        aliases: Mapping[str, str] | None = None,
        trailing: TrailingArray | None = None,
        doc: str = "",
    ) -> None:
        """Describe struct ``name``.

        ``min_through`` names the field whose end is the minimum size (how the kernel writes
        it: ``offsetofend(struct, field)``); ``min_size`` gives it as a number instead.
        """
        self.name: Final = name
        self.fields: Final[tuple[Field, ...]] = tuple(fields)
        self.size: Final = size
        self.aliases: Final[Mapping[str, str]] = dict(aliases or {})
        self.trailing: Final = trailing
        self.doc: Final = doc
        self._by_name: dict[str, Field] = {}
        self._check_fields()
        for alias, target in self.aliases.items():
            if alias in self._by_name:
                raise ValueError(f"{name}: alias {alias!r} shadows a field")
            if target not in self._by_name:
                raise ValueError(f"{name}: alias {alias!r} points at unknown field {target!r}")
        if min_size is not None and min_through is not None:
            raise ValueError(f"{name}: give min_size or min_through, not both")
        if min_through is not None:
            resolved_min = self.field_end(min_through)
            min_field: str | None = self._canonical(min_through)
        else:
            resolved_min = size if min_size is None else min_size
            min_field = None
        self.min_field: Final = min_field
        if not 0 <= resolved_min <= size:
            raise ValueError(f"{name}: min_size {resolved_min} outside 0..{size}")
        self.min_size: Final = resolved_min
        self._compile()

    # ------------------------------------------------------------------ construction

    @classmethod
    def natural(
        cls,
        name: str,
        specs: Sequence[FieldSpec],
        *,
        size: int | None = None,
        min_size: int | None = None,
        min_through: str | None = None,
        aliases: Mapping[str, str] | None = None,
        trailing: TrailingArray | None = None,
        doc: str = "",
    ) -> Layout:
        """Lay fields out the way a C compiler does: each at its natural alignment.

        The struct size is rounded up to the largest member alignment.  Passing ``size`` is a
        self-check against the documented size: a mismatch raises instead of silently
        producing a layout that disagrees with the header.
        """
        fields: list[Field] = []
        position = 0
        max_alignment = 1
        for spec in specs:
            new_field = Field(spec[0], 0, spec[1], spec[2] if len(spec) == 3 else 0)
            alignment = new_field.alignment
            position = -(-position // alignment) * alignment
            fields.append(Field(new_field.name, position, new_field.kind, new_field.size))
            position += new_field.size
            max_alignment = max(max_alignment, alignment)
        computed_size = -(-position // max_alignment) * max_alignment
        if size is not None and size != computed_size:
            raise ValueError(f"{name}: natural layout is {computed_size} bytes, expected {size}")
        return cls(
            name,
            fields,
            computed_size,
            min_size=min_size,
            min_through=min_through,
            aliases=aliases,
            trailing=trailing,
            doc=doc,
        )

    def _check_fields(self) -> None:
        previous_end = 0
        for member in self.fields:
            if member.name in self._by_name:
                raise ValueError(f"{self.name}: duplicate field {member.name!r}")
            if member.offset < previous_end:
                raise ValueError(f"{self.name}: field {member.name!r} overlaps its predecessor")
            if member.offset % member.alignment:
                raise ValueError(f"{self.name}: field {member.name!r} is misaligned")
            if member.end > self.size:
                raise ValueError(f"{self.name}: field {member.name!r} ends past size {self.size}")
            self._by_name[member.name] = member
            previous_end = member.end

    def _compile(self) -> None:
        self._names: tuple[str, ...] = tuple(member.name for member in self.fields)
        self._name_set: frozenset[str] = frozenset(self._names)
        self._names_defaults: tuple[tuple[str, FieldValue], ...] = tuple(
            (member.name, member.default) for member in self.fields
        )
        self._bytes_limits: tuple[tuple[str, int], ...] = tuple(
            (member.name, member.size) for member in self.fields if member.kind is FieldKind.BYTES
        )
        self._field_structs: dict[str, tuple[int, struct.Struct]] = {
            member.name: (member.offset, struct.Struct("<" + member.struct_format))
            for member in self.fields
        }
        for alias, target in self.aliases.items():
            self._field_structs[alias] = self._field_structs[target]

        # Prefix structs: _prefix_structs[k] decodes the first k fields (k = 0 is unused).
        prefix_structs: list[struct.Struct | None] = [None]
        parts: list[str] = []
        position = 0
        for member in self.fields:
            if member.offset > position:
                parts.append(f"{member.offset - position}x")
            parts.append(member.struct_format)
            position = member.end
            prefix_structs.append(struct.Struct("<" + "".join(parts)))
        self._prefix_structs: tuple[struct.Struct | None, ...] = tuple(prefix_structs)
        tail = f"{self.size - position}x" if self.size > position else ""
        self._full_struct: struct.Struct = struct.Struct("<" + "".join(parts) + tail)

        # _fields_within[n] = how many leading fields fit entirely in n bytes (n < size).
        within: list[int] = []
        count = 0
        for available in range(self.size):
            while count < len(self.fields) and self.fields[count].end <= available:
                count += 1
            within.append(count)
        self._fields_within: tuple[int, ...] = tuple(within)

    # ------------------------------------------------------------------ introspection

    def _canonical(self, name: str) -> str:
        if name in self._by_name:
            return name
        target = self.aliases.get(name)
        if target is None:
            raise KeyError(f"{self.name} has no field {name!r}")
        return target

    @property
    def names(self) -> tuple[str, ...]:
        """Field names in offset order (aliases excluded)."""
        return self._names

    def field(self, name: str) -> Field:
        """The field called ``name`` (or one of its aliases); ``KeyError`` if none."""
        return self._by_name[self._canonical(name)]

    def offset(self, name: str) -> int:
        """Byte offset of field ``name`` (C ``offsetof``)."""
        return self.field(name).offset

    def field_end(self, name: str) -> int:
        """Offset one past field ``name`` (C ``offsetofend``): the ``minsz`` idiom."""
        return self.field(name).end

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._by_name or name in self.aliases)

    def __repr__(self) -> str:
        members = ", ".join(f"{m.name}@{m.offset}:{m.kind.value}" for m in self.fields)
        return f"<Layout {self.name} size={self.size} min_size={self.min_size} [{members}]>"

    # ------------------------------------------------------------------ decoding

    def unpack(
        self, data: bytes | bytearray | memoryview, offset: int = 0
    ) -> dict[str, FieldValue]:
        """Decode the fields lying entirely within ``data[offset:]``.

        A short buffer is normal (the caller's ``argsz`` may be smaller than the struct):
        fields that do not fit completely are simply absent from the result.  Bytes past the
        struct's size are ignored.
        """
        if offset < 0:
            raise ValueError("offset must not be negative")
        available = len(data) - offset
        if available >= self.size:
            return dict(zip(self._names, self._full_struct.unpack_from(data, offset)))
        if available <= 0:
            return {}
        count = self._fields_within[available]
        prefix = self._prefix_structs[count]
        if prefix is None:
            return {}
        return dict(zip(self._names, prefix.unpack_from(data, offset)))

    def unpack_array(
        self, data: bytes | bytearray | memoryview, count: int, offset: int = 0
    ) -> list[dict[str, FieldValue]]:
        """Decode up to ``count`` consecutive structs (a C array) starting at ``offset``.

        Entries that are not completely inside ``data`` are left out, so a truncated array
        yields fewer elements rather than a half-decoded last one.
        """
        if offset < 0 or count < 0:
            raise ValueError("offset and count must not be negative")
        fitting = max(0, (len(data) - offset) // self.size) if self.size else 0
        decode = self._full_struct.unpack_from
        names = self._names
        return [
            dict(zip(names, decode(data, offset + index * self.size)))
            for index in range(min(count, fitting))
        ]

    # ------------------------------------------------------------------ encoding

    def _resolve_names(self, values: Mapping[str, FieldValue]) -> dict[str, FieldValue]:
        resolved: dict[str, FieldValue] = {}
        for key, value in values.items():
            canonical = self._canonical(key)
            if canonical in resolved:
                raise ValueError(f"{self.name}: field {canonical!r} given twice (via an alias)")
            resolved[canonical] = value
        return resolved

    def _ordered_values(self, values: Mapping[str, FieldValue]) -> list[FieldValue]:
        if not values.keys() <= self._name_set:
            values = self._resolve_names(values)
        for name, limit in self._bytes_limits:
            given = values.get(name)
            if isinstance(given, bytes | bytearray) and len(given) > limit:
                raise ValueError(
                    f"{self.name}.{name}: {len(given)} bytes do not fit in {limit}"
                )
        return [values.get(name, default) for name, default in self._names_defaults]

    def _explain(self, values: Mapping[str, FieldValue], error: struct.error) -> ValueError:
        """Turn struct's terse complaint into one that names the offending field."""
        for key, value in values.items():
            try:
                _, packer = self._field_structs[key]
                packer.pack(value)
            except (KeyError, struct.error) as field_error:
                return ValueError(f"{self.name}.{key} = {value!r}: {field_error}")
        return ValueError(f"{self.name}: {error}")

    # Encoders take their fixed parameters positional-only (``/``): struct fields are passed
    # as keywords and several structs have a field called ``offset``.

    def pack(self, /, **values: FieldValue) -> bytes:
        """Encode a whole struct (``size`` bytes); fields not given are zero."""
        ordered = self._ordered_values(values)
        try:
            return self._full_struct.pack(*ordered)
        except struct.error as error:
            raise self._explain(values, error) from error

    def pack_into(
        self, buffer: bytearray | memoryview, at: int = 0, /, **values: FieldValue
    ) -> None:
        """Write a whole struct (``size`` bytes, unset fields zero) at ``buffer[at:]``."""
        ordered = self._ordered_values(values)
        try:
            self._full_struct.pack_into(buffer, at, *ordered)
        except struct.error as error:
            raise self._explain(values, error) from error

    def write_fields(
        self, buffer: bytearray | memoryview, at: int = 0, /, **values: FieldValue
    ) -> None:
        """Overwrite only the named fields of the struct at ``buffer[at:]``.

        This is how output fields get filled into the kernel's working copy of a user struct:
        everything not named keeps the caller's bytes (the kernel echoes them back).
        """
        for key, value in values.items():
            try:
                field_offset, packer = self._field_structs[key]
            except KeyError:
                raise KeyError(f"{self.name} has no field {key!r}") from None
            if isinstance(value, bytes | bytearray) and len(value) > packer.size:
                raise ValueError(f"{self.name}.{key}: {len(value)} bytes do not fit")
            try:
                packer.pack_into(buffer, at + field_offset, value)
            except struct.error as error:
                raise ValueError(f"{self.name}.{key} = {value!r}: {error}") from error

    # ------------------------------------------------------------------ display

    def describe(self, values: Mapping[str, FieldValue]) -> str:
        """Render decoded ``values`` for a trace line: ``{argsz=32, flags=0x3, iova=0x1000}``.

        Pointers, u64s and flag words are hexadecimal (that is how people read them); other
        numbers decimal.  Fields missing from ``values`` (short input) are omitted.
        """
        shown = [
            f"{member.name}={_describe_value(member.kind, member.name, values[member.name])}"
            for member in self.fields
            if member.name in values
        ]
        return "{" + ", ".join(shown) + "}"
