"""Read a RetrievePropertiesEx answer by cutting it at its fixed markup, without an XML tree.

A fleet-wide answer is ~9 KB and ~200 elements per VM, three quarters of them the device
list. Building an ElementTree of it takes longer than the simulator takes to produce it,
and decoding every element into a record costs twice that again. Here the answer is split
with ``bytes.split`` on ``</objects>`` and each object's properties are cut out by one
regular expression (``<propSet><name>N</name><val A>V</val></propSet>``), kept as raw
``(attributes, content)`` bytes in a :class:`RawProps` mapping that decodes a value only
when something reads it (or all at once, :meth:`RawProps.decoded`, for the VM mapper): scalars straight from their text, flat structures (an extraConfig
array, a guest NIC list) by :func:`_flat`, anything deeper by :mod:`fastsoap` from a small
ElementTree. :mod:`fastmap` reads the device list from its raw bytes and never decodes it.

Anything this module does not expect (CDATA, comments, a ``missingSet``, another encoding,
markup with attributes or whitespace where vCenter writes none) raises :class:`NotUnderstood`
and the caller decodes the whole answer the generic way.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from typing import Any

from pyVmomi import VmomiSupport, vmodl

from guestprep.vsphere import fastsoap
from guestprep.vsphere.fastsoap import BOOL, DATA, FLOAT, INT, LIST, MO, TEXT, MoRef, Record

PC = vmodl.query.PropertyCollector
_OBJECT_CONTENT = PC.ObjectContent  # pyVmomi resolves nested types on every attribute access
_VAL_TYPE = fastsoap._field(vmodl.DynamicProperty, "val")[1]  # anyType: what a <val> without xsi:type is read as
DEFERRED_TYPES = {"ArrayOfVirtualDevice"}  # the heavy value: read field by field by fastmap

_XSI_TYPE = re.compile(rb'(?:^|\s)[A-Za-z_][\w.-]*:type="([^"]*)"')   # xsi:type, whatever the prefix
_MO_TYPE = re.compile(rb'(?:^|\s)type="([^"]*)"')                      # a reference's own type
_OBJ = re.compile(rb'<objects><obj type="([^"]*)">([^<]*)</obj>')
_NS_DECL = re.compile(rb'\sxmlns:([A-Za-z_][\w.-]*)="([^"]*)"')
_ENTITY = re.compile(r"&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}
# a flat structure: items whose children are all leaves <tag attrs>text</tag>. Possessive (*+, ?+)
# where what a quantifier gives up could never match what follows (a name char is neither space nor
# ">", text stops at "<"): the same matches without backtracking
_ITEM = re.compile(rb'<([A-Za-z_][\w.-]*+)((?:\s[^>]*+)?+)>((?:<([A-Za-z_][\w.-]*+)(?:\s[^>]*+)?+>[^<]*+</\4>)+|[^<]*+)</\1>')
_LEAF = re.compile(rb'<([A-Za-z_][\w.-]*+)((?:\s[^>]*+)?+)>([^<]*+)</\1>')


class NotUnderstood(Exception):
    """The answer has a shape this scanner does not read; decode it the generic way."""


def text(raw: bytes) -> str:
    """Element text as an XML parser reports it: UTF-8, line ends normalized, entities expanded."""
    s = raw.decode("utf-8")
    if "\r" in s:  # XML 1.0 section 2.11: a parser passes \r\n and lone \r on as \n
        s = s.replace("\r\n", "\n").replace("\r", "\n")
    if "&" in s:
        if s.count("&") != len(_ENTITY.findall(s)):  # an entity we do not know: only a parser can say
            raise NotUnderstood("unknown entity")
        s = _ENTITY.sub(_entity, s)
    return s


def _entity(m: re.Match) -> str:
    name = m.group(1)
    if name[0] == "#":
        return chr(int(name[2:], 16) if name[1] == "x" else int(name[1:]))
    return _NAMED[name]


def decode_one(ns_decls: bytes, attrs: bytes, content: bytes) -> Any:
    """One <val> the generic way: a small ElementTree, decoded by fastsoap."""
    root = ET.fromstring(b"".join([b'<batch xmlns="urn:vim25"', ns_decls, b"><val", attrs, b">",
                                   content, b"</val></batch>"]))
    return fastsoap._decode(root[0], _VAL_TYPE)


class Property:
    """A DynamicProperty (name, val) with plain attributes: read twice per property per object."""

    __slots__ = ("name", "val")

    def __init__(self, name: str, val: Any = None):
        self.name, self.val = name, val

    @property
    def __class__(self):
        return vmodl.DynamicProperty

    def __repr__(self) -> str:
        return f"DynamicProperty({self.name!r}, {self.val!r})"


class DeferredArray(list):
    """An array value kept as its XML (``raw``) until something reads it as a list.

    :mod:`fastmap` reads ``raw`` directly; any other reader (``for``, ``len``, indexing)
    gets the same records the generic decoder makes, decoded on first use.
    """

    def __init__(self, attrs: bytes, raw: bytes, ns_decls: bytes):
        super().__init__()
        self.attrs, self.raw, self._ns = attrs, raw, ns_decls
        self.decoded = False

    def _load(self) -> None:
        if not self.decoded:
            self.decoded = True
            list.extend(self, decode_one(self._ns, self.attrs, self.raw) or [])

    def __iter__(self):
        self._load()
        return list.__iter__(self)

    def __len__(self) -> int:
        self._load()
        return list.__len__(self)

    def __bool__(self) -> bool:
        return len(self) > 0

    def __getitem__(self, index):
        self._load()
        return list.__getitem__(self, index)

    def __contains__(self, item) -> bool:
        self._load()
        return list.__contains__(self, item)

    def __reversed__(self):
        self._load()
        return list.__reversed__(self)

    def __eq__(self, other) -> bool:
        self._load()
        return list.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self._load()
        return list.__repr__(self)


_ABSENT = object()
# In the hot paths below `x.find(b"<") < 0` stands for `b"<" not in x`: bytes.__contains__ first tries its
# argument as an integer (`60 in b"<"`), and the TypeError it formats and drops costs more than the search
_heads: dict[str, tuple[bytes, bytes, int, Any, int]] = {}  # name -> (head, <val> attributes, kind, type, len(head))


class RawProps(Mapping):
    """One object's properties as the answer wrote them (name -> its ``<propSet>`` bytes), each
    decoded on first read into the value the generic decoder gives."""

    __slots__ = ("raw", "ns", "_vals", "plain")

    def __init__(self, raw: dict[str, bytes], ns_decls: bytes, vals: dict[str, Any] | None = None,
                 plain: bool = False):
        # _vals: name -> its propSet bytes until read, then its value (decoded values are never bytes)
        self.raw, self.ns, self._vals = raw, ns_decls, vals if vals is not None else dict(raw)
        self.plain = plain  # no "&" and no "\r" in any of the bytes: text is its UTF-8 decoding as it stands

    def __getitem__(self, name: str) -> Any:
        value = self.get(name, _ABSENT)
        if value is _ABSENT:
            raise KeyError(name)
        return value

    def unread(self, name: str) -> bytes | None:
        """The property's ``<propSet>`` bytes while nothing has read (or replaced) its value."""
        value = self._vals.get(name)
        return value if value.__class__ is bytes else None

    def get(self, name: str, default: Any = None) -> Any:  # the hot path of mapping.to_source_vm
        part = self._vals.get(name, _ABSENT)
        if part is _ABSENT:
            return default
        if part.__class__ is not bytes:
            return part  # read before
        try:
            known = _heads.get(name)  # this property's <propSet><name>..<val ..> as the last answer wrote it
            if known is not None and part.startswith(known[0]) and part.endswith(b"</val>"):
                content = part[len(known[0]):-6]
                kind = known[2]
                if content.find(b"<") >= 0 or kind < 0:
                    value = value_of(known[1], content, self.ns)
                elif kind == TEXT:
                    value = text(content)  # most properties: strings and enums
                else:
                    value = _scalar(kind, known[3], content)
            else:
                attrs, content = val_of(part)
                if content and attrs:
                    _, typ, kind = _val_type(attrs)
                    _heads[name] = (part[:len(part) - len(content) - 6], attrs, kind, typ, len(part) - len(content) - 6)
                value = value_of(attrs, content, self.ns)
        except (NotUnderstood, ValueError, UnicodeDecodeError):
            value = _generic_property(part, self.ns)
        self._vals[name] = value
        return value

    def decoded(self, skip: str) -> dict[str, Any]:
        """Every property but ``skip`` as :meth:`get` reads it, into a plain dict: for a mapper that
        reads them all (a dict lookup per read instead of a method call). A value without markup whose
        head was seen before is read here by get()'s own rules (strings without a call); everything else
        goes through :meth:`get`. A value get() would hand to the generic decoder after an error (bad
        UTF-8, a bad number) raises here: fastmap then maps the VM the generic way."""
        out = {}
        get, heads, plain = self.get, _heads, self.plain
        for name, part in self._vals.items():
            if part.__class__ is bytes and name != skip:
                known = heads.get(name)
                if known is not None and part.startswith(known[0]) and part.endswith(b"</val>"):
                    _, _, kind, typ, size = known
                    content = part[size:-6]
                    if kind >= 0 and content.find(b"<") < 0:  # get()'s own branches for a known head
                        if kind == TEXT:
                            out[name] = content.decode() if plain else text(content)
                        else:
                            out[name] = _scalar(kind, typ, content)
                        continue
                out[name] = get(name)
            elif name != skip:
                out[name] = part
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def with_value(self, name: str, value: Any) -> RawProps:
        """The same properties with one value replaced (the caller's mapping is left as it is)."""
        return RawProps(self.raw, self.ns, {**self._vals, name: value}, self.plain)


def val_of(part: bytes) -> tuple[bytes, bytes]:
    """(<val> attributes, content) of one ``<propSet><name>N</name><val A>C</val>`` (its end tag cut off)."""
    at = part.find(b"</name><val", 15)
    gt = part.find(b">", at + 11)
    if at < 0 or gt < 0 or part[at + 11:at + 12] not in b" \t\r\n>/" or b"<" in part[15:at]:
        raise NotUnderstood("a propSet without <name> then <val>")
    attrs = part[at + 11:gt]
    if attrs.endswith(b"/"):
        if gt + 1 != len(part):
            raise NotUnderstood("content after an empty <val/>")
        return attrs[:-1], b""
    if not part.endswith(b"</val>"):
        raise NotUnderstood("a propSet that does not end with its value")
    return attrs, part[gt + 1:-6]


def _generic_property(part: bytes, ns_decls: bytes) -> Any:
    """One property the generic way (its own small ElementTree): for values this module does not read."""
    root = ET.fromstring(b"".join([b'<batch xmlns="urn:vim25"', ns_decls, b">", part, b"</propSet></batch>"]))
    for child in root[0]:
        if fastsoap._local(child.tag) == "val":
            return fastsoap._decode(child, _VAL_TYPE)
    return None


class RawObject(Record):
    """An ObjectContent whose properties stay raw (:class:`RawProps`); ``propSet`` decodes them all."""

    __slots__ = ("props",)

    def __init__(self, obj: MoRef, props: RawProps):
        super().__init__(_OBJECT_CONTENT, {"obj": obj})
        self.props = props

    def __getattr__(self, name: str) -> Any:
        if name == "propSet":
            found = self._f["propSet"] = [Property(n, self.props[n]) for n in self.props.raw]
            return found
        return super().__getattr__(name)


def scan_result(body: bytes) -> Any:
    """The ``returnval`` of a (Continue)RetrievePropertiesEx answer: a RetrieveResult record of
    :class:`RawObject`. Raises :class:`NotUnderstood` for any shape it does not read (the caller
    then parses the answer with :func:`fastsoap.decode_result`).
    """
    head_end = body.find(b"<returnval")
    start = body.find(b">", head_end) + 1
    end = body.rfind(b"</returnval>")
    if head_end < 0 or body[head_end + 10:head_end + 11] not in (b">", b" ") or end < start:
        raise NotUnderstood("no <returnval>")
    head = body[:head_end]
    # ("!" first: one memchr pass; a missingSet, a second returnval or nested objects break the
    # structure checks below: a piece that does not start with <objects><obj>, or propSets not back to back)
    if b"!" in body and (b"<![CDATA[" in body or b"<!--" in body):
        raise NotUnderstood("CDATA or comments")
    if head.startswith(b"<?xml") and not re.match(rb'<\?xml[^>]*encoding="(?i:utf-8)"', head):
        raise NotUnderstood("not UTF-8")
    ns_decls = b"".join(b' xmlns:%s="%s"' % m for m in _NS_DECL.findall(head))
    content = body[start:end]
    fields: dict[str, Any] = {}
    if content.startswith(b"<token>"):  # the WSDL's order (token, then objects): vCenter's, pyVmomi's
        close = content.find(b"</token>")
        if close < 0 or b"<" in content[7:close]:
            raise NotUnderstood("a <token> with markup")
        fields["token"] = text(content[7:close])
        content = content[close + 8:]
    pieces = content.split(b"</objects>")
    fields["objects"] = [_object(piece, ns_decls) for piece in pieces[:-1]]
    tail = pieces[-1]
    if tail:
        if "token" in fields or not (tail.startswith(b"<token>") and tail.endswith(b"</token>")
                                     and tail.count(b"<") == 2):
            raise NotUnderstood("unexpected content after the objects")
        fields["token"] = text(tail[7:-8])
    return Record(PC.RetrieveResult, fields)


_names: dict[bytes, str] = {}
_types: dict[bytes, Any] = {}


def _name(raw: bytes) -> str:
    found = _names.get(raw)
    if found is None:
        found = _names[raw] = text(raw)
    return found


def _object(piece: bytes, ns_decls: bytes) -> RawObject:
    m = _OBJ.match(piece)
    if m is None:
        raise NotUnderstood("an <objects> without a plain <obj> first")
    parts = piece.split(b"</propSet>")  # the first part without the <obj> (not the whole piece: copied once)
    parts[0] = parts[0][m.end():]
    # propSets back to back, each with its <name> first, nothing before, between or after them: every
    # piece between two </propSet> starts <propSet><name>; one inside another's value would leave a piece
    # that does not (its value's rest, "</val>"), and so would anything else between them
    if parts.pop():
        raise NotUnderstood("content after the last propSet")
    raw = {}
    names = _names
    for part in parts:
        close = part.find(b"</name>")
        if close < 15 or not part.startswith(b"<propSet><name>"):
            raise NotUnderstood("propSets not back to back, or one inside another")
        key = part[15:close]
        name = names.get(key)  # names seen before had no markup
        if name is None:
            if key.find(b"<") >= 0:
                raise NotUnderstood("propSets not back to back, or one inside another")
            name = _name(key)
        raw[name] = part
    if len(raw) != len(parts):
        raise NotUnderstood("a property named twice")
    kind = m.group(1)
    typ = _types.get(kind)
    if typ is None:
        typ = _types[kind] = fastsoap._lookup(text(kind)) or VmomiSupport.ManagedObject
    plain = piece.find(b"&") < 0 and piece.find(b"\r") < 0  # text() then has nothing to expand or normalize
    return RawObject(MoRef(typ, text(m.group(2))), RawProps(raw, ns_decls, plain=plain))


_val_types: dict[bytes, tuple[str | None, Any, int]] = {}


def _val_type(attrs: bytes, declared: Any = _VAL_TYPE) -> tuple[str | None, Any, int]:
    """(xsi:type, pyVmomi type, fastsoap kind) of an element by its attributes and declared type; cached."""
    key = (attrs, declared)
    found = _val_types.get(key)
    if found is None:
        m = _XSI_TYPE.search(attrs)
        xsi = m.group(1).decode() if m else None
        typ = fastsoap._wsdl_type(xsi) if xsi else declared
        kind = fastsoap._kind(typ) if typ is not None else -1
        if xsi == "ManagedObjectReference" or kind == MO:  # the reference's own type is in type=""
            mo = _MO_TYPE.search(attrs)
            typ, kind = fastsoap._lookup(mo.group(1).decode() if mo else "") or VmomiSupport.ManagedObject, MO
        found = (xsi, typ, kind)
        _val_types[key] = found
    return found


def value_of(attrs: bytes, content: bytes, ns_decls: bytes) -> Any:
    """The value of one <val>, as fastsoap._decode would give it."""
    xsi, typ, kind = _val_type(attrs)
    if content.find(b"<") < 0:
        if kind == -1:  # a type newer than our pyVmomi: its text, as fastsoap keeps it
            return text(content) if content else None
        return _scalar(kind, typ, content)
    if kind == LIST and xsi in DEFERRED_TYPES:
        return DeferredArray(attrs, content, ns_decls)
    if kind in (LIST, DATA):
        try:
            return _flat(kind, typ, content)
        except NotUnderstood:
            pass
    return decode_one(ns_decls, attrs, content)


def _scalar(kind: int, typ: Any, content: bytes) -> Any:
    """An element without children (fastsoap._decode of it)."""
    if kind == TEXT:
        return text(content)  # strings, enums, dates
    if kind == MO:
        return MoRef(typ, text(content))
    if kind == INT:
        return int(content or 0)
    if kind == BOOL:
        return fastsoap._BOOL.get(content.strip().decode(), False)
    if kind == FLOAT:
        return float(content or 0)
    if kind == DATA:
        return Record(typ, {})
    if kind == LIST:
        return []
    return text(content) if content else None


def _flat(kind: int, typ: Any, content: bytes) -> Any:
    """A record of leaves, or an array of such records, without an XML tree (NotUnderstood otherwise)."""
    if kind == DATA:
        return _record(typ, content)
    item = getattr(typ, "Item", None)
    out = []
    used = 0
    for tag, attrs, inner, _ in _ITEM.findall(content):
        used += 2 * len(tag) + len(attrs) + len(inner) + 5
        xsi, ityp, ikind = _val_type(attrs, item)
        if ikind == DATA:
            out.append(_record(ityp, inner))
        elif ikind != -1 and inner.find(b"<") < 0:
            out.append(_scalar(ikind, ityp, inner))
        else:
            raise NotUnderstood("an array item that is not a flat record")
    if used != len(content):
        raise NotUnderstood("an array item with nested elements")
    return out


_leaves: dict[tuple[Any, bytes, bytes], tuple[str, bool, Any, int]] = {}


def _leaf(typ: Any, tag: bytes, attrs: bytes) -> tuple[str, bool, Any, int]:
    """(field name, is a list, type, kind) of a leaf <tag attrs> in a record of type typ."""
    name = tag.decode()
    entry = fastsoap._field(typ, name)
    if entry is None:
        return name, False, None, -1
    xsi, ftyp, fkind = _val_type(attrs, entry[1])
    return name, entry[0], ftyp, fkind


def _record(typ: Any, content: bytes) -> Record:
    fields: dict[str, Any] = {}
    used = 0
    for tag, attrs, inner in _LEAF.findall(content):
        used += 2 * len(tag) + len(attrs) + len(inner) + 5
        key = (typ, tag, attrs)
        found = _leaves.get(key)
        if found is None:
            found = _leaves[key] = _leaf(typ, tag, attrs)
        name, is_list, ftyp, fkind = found
        if ftyp is None:  # a field newer than our pyVmomi, or of a type it does not know: its text
            value = text(inner) if inner else None
        elif fkind == TEXT:
            value = text(inner)
        else:
            value = _scalar(fkind, ftyp, inner)
        if is_list:
            fields.setdefault(name, []).append(value)
        else:
            fields[name] = value
    if used != len(content):
        raise NotUnderstood("a record with nested elements")
    return Record(typ, fields)


# ---- the retrieval entry points (fastsoap carries the request; this module reads the answer)

def retrieve_result(body: bytes) -> Any:
    """The ``returnval`` of a (Continue)RetrievePropertiesEx answer as a Record (or None).

    The usual answer is read here without building a tree; anything this module does not
    expect is decoded by :func:`fastsoap.decode_result`, element by element.
    """
    try:
        return scan_result(body)
    except (NotUnderstood, ET.ParseError, UnicodeDecodeError, ValueError):
        return fastsoap.decode_result(body)


def retrieve_properties_ex(pc: Any, specs: list[Any], options: Any) -> Any:
    return retrieve_result(fastsoap.invoke_raw(pc._stub, pc, "RetrievePropertiesEx", (specs, options)))


def continue_retrieve_properties_ex(pc: Any, token: str) -> Any:
    return retrieve_result(fastsoap.invoke_raw(pc._stub, pc, "ContinueRetrievePropertiesEx", (token,)))
