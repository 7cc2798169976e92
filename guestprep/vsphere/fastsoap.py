"""A fast reader for large PropertyCollector answers.

pyVmomi's SAX deserializer spends ~45 µs per XML element; one RetrievePropertiesEx for
1,000 VMs has ~200,000 elements (every VM's device list), so pyVmomi alone needs ~9 s to
*parse* an answer the server sends in under one. Here the answer is parsed by the C
ElementTree parser into light records that carry pyVmomi's own type (so ``isinstance``
against ``vim.*`` classes and attribute access work as with pyVmomi objects), using
pyVmomi's type registry for the schema. The request is still serialized by pyVmomi on the
session's own connection pool, with its cookie; faults are decoded by pyVmomi.

Scope: read-only answers of RetrievePropertiesEx/ContinueRetrievePropertiesEx. Date-times
stay ISO strings; nothing else in guestprep reads them from this path. The usual answer is
not even parsed into a tree: :mod:`fastscan` cuts it at its markup (see there).
"""

from __future__ import annotations

import io
import socket
import xml.etree.ElementTree as ET
from http.client import HTTPException
from http.cookies import SimpleCookie
from typing import Any

from pyVmomi import SoapAdapter, VmomiSupport, vmodl

XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
VIM_NS = "urn:vim25"
_BOOL = {"true": True, "1": True, "false": False, "0": False}
_XSD = {
    "string": str, "anyURI": str, "dateTime": str, "base64Binary": str,
    "int": int, "long": int, "short": int, "byte": int, "unsignedInt": int, "unsignedLong": int,
    "boolean": bool, "double": float, "float": float,
}


class MoRef:
    """A managed object reference that isinstance-matches its pyVmomi class."""

    __slots__ = ("_moId", "_type")

    def __init__(self, cls: type, moid: str):
        self._type = cls
        self._moId = moid

    @property
    def __class__(self):  # noqa: D401 - isinstance() consults __class__
        return self._type

    def __repr__(self) -> str:
        return f"'{getattr(self._type, '_wsdlName', 'ManagedObject')}:{self._moId}'"


_absent: dict[tuple[Any, str], bool] = {}  # (type, field) -> whether an absent field reads as []


class Record:
    """A data object: fields by name; absent fields read as None, absent arrays as []."""

    __slots__ = ("_type", "_f")

    def __init__(self, cls: type, fields: dict[str, Any]):
        self._type = cls
        self._f = fields

    @property
    def __class__(self):
        return self._type

    def __getattr__(self, name: str) -> Any:
        f = self._f
        if name in f:
            return f[name]
        key = (self._type, name)
        is_list = _absent.get(key)
        if is_list is None:
            try:
                info = self._type._GetPropertyInfo(name)
            except (AttributeError, KeyError):
                raise AttributeError(name) from None
            is_list = _absent[key] = issubclass(info.type, list)
        return [] if is_list else None  # a new list each time: the caller may append to it

    def __repr__(self) -> str:
        return f"{getattr(self._type, '_wsdlName', '?')}({self._f!r})"


_type_cache: dict[str, Any] = {}


def _wsdl_type(name: str) -> Any:
    t = _type_cache.get(name)
    if t is None:
        if ":" in name:
            prefix, local = name.split(":", 1)
            if prefix == "xsd":
                t = _XSD.get(local, str)
            else:
                t = _lookup(local)
        else:
            t = _lookup(name)
        _type_cache[name] = t
    return t


def _lookup(local: str) -> Any:
    try:
        return VmomiSupport.GetWsdlType(VIM_NS, local)
    except KeyError:
        try:
            return VmomiSupport.GetWsdlType(VmomiSupport.XMLNS_VMODL_BASE, local)
        except (KeyError, AttributeError):
            return None


def _local(tag: str) -> str:
    return tag[tag.rfind("}") + 1:]


# how to decode a value of a given type: computed once per type, then a dict lookup
MO, LIST, BOOL, INT, FLOAT, DATA, TEXT = range(7)
_kinds: dict[Any, int] = {}
_fields: dict[Any, dict[str, tuple[bool, Any]]] = {}


def _kind(typ: Any) -> int:
    k = _kinds.get(typ)
    if k is None:
        if not isinstance(typ, type):
            k = TEXT
        elif issubclass(typ, VmomiSupport.ManagedObject):
            k = MO
        elif issubclass(typ, list):
            k = LIST
        elif typ is bool:
            k = BOOL
        elif issubclass(typ, VmomiSupport.Enum) or issubclass(typ, str):
            k = TEXT
        elif issubclass(typ, int):
            k = INT
        elif issubclass(typ, float):
            k = FLOAT
        elif issubclass(typ, VmomiSupport.DataObject):
            k = DATA
        else:
            k = TEXT
        _kinds[typ] = k
    return k


def _field(typ: Any, name: str) -> tuple[bool, Any] | None:
    table = _fields.get(typ)
    if table is None:
        table = _fields[typ] = {}
    entry = table.get(name)
    if entry is None:
        try:
            ptype = typ._GetPropertyInfo(name).type
        except (AttributeError, KeyError):
            return None
        is_list = issubclass(ptype, list)
        entry = table[name] = (is_list, ptype.Item if is_list else ptype)
    return entry


def _decode(el: ET.Element, declared: Any) -> Any:
    xsi = el.get(XSI_TYPE)
    if xsi == "ManagedObjectReference":
        kind = MO
    else:
        typ = _wsdl_type(xsi) if xsi else declared
        if typ is None:
            return el.text
        kind = _kind(typ)
    if kind == TEXT:
        return el.text if el.text is not None else ""  # strings, enums, paths, dates
    if kind == DATA:
        fields: dict[str, Any] = {}
        for child in el:
            name = _local(child.tag)
            entry = _field(typ, name)
            if entry is None:
                fields[name] = child.text  # a field newer than our pyVmomi: keep its text
            elif entry[0]:
                value = _decode(child, entry[1])
                lst = fields.get(name)
                if lst is None:
                    fields[name] = [value]
                else:
                    lst.append(value)
            else:
                fields[name] = _decode(child, entry[1])
        return Record(typ, fields)
    if kind == INT:
        return int(el.text or 0)
    if kind == BOOL:
        return _BOOL.get((el.text or "").strip(), False)
    if kind == MO:
        return MoRef(_lookup(el.get("type") or "") or VmomiSupport.ManagedObject, el.text or "")
    if kind == LIST:  # ArrayOfX
        item = getattr(typ, "Item", None)
        return [_decode(c, item) for c in el]
    if kind == FLOAT:
        return float(el.text or 0)
    return el.text


def invoke_raw(stub: Any, mo: Any, method: str, args: tuple) -> bytes | None:
    """POST one SOAP call with pyVmomi's serializer and connection pool; return the raw body.

    A SOAP fault (HTTP 500) is decoded and raised by pyVmomi exactly as a normal call would.
    """
    info = type(mo)._GetMethodInfo(method)
    return post_raw(stub, info, stub.SerializeRequest(mo, info, args))


def post_raw(stub: Any, info: Any, req: bytes) -> bytes | None:
    """POST one serialized SOAP request of method ``info``; the raw body (see :func:`invoke_raw`).

    Safe from several threads at once: each call takes its own connection from the session's pool.
    """
    headers = {"Cookie": stub.cookie, "SOAPAction": stub.versionId,
               "Content-Type": f"text/xml; charset={SoapAdapter.XML_ENCODING}"}
    conn = stub.GetConnection()
    try:
        conn.request("POST", stub.path, req, headers)
        resp = conn.getresponse()
        body = resp.read()
    except (socket.error, HTTPException):
        conn.close()
        stub.DropConnections()
        raise
    cookie = resp.getheader("Set-Cookie")
    if cookie:
        stub.cookie = cookie
        c = SimpleCookie(cookie).get(SoapAdapter.COOKIE_NAME)
        if c:
            stub.SetSessionId(c.value)
    if resp.status == 200:
        stub.ReturnConnection(conn)
        return body
    conn.close()
    if resp.status == 500:
        fault = SoapAdapter.SoapResponseDeserializer(stub).Deserialize(io.BytesIO(body), info.result)
        raise fault
    raise HTTPException(f"{resp.status} {resp.reason}")


def decode_result(body: bytes) -> Any:
    """:func:`fastscan.retrieve_result` through one ElementTree of the whole answer (the generic way)."""
    root = ET.fromstring(body)
    for el in root.iter():
        if _local(el.tag) == "returnval":
            return _decode(el, vmodl.query.PropertyCollector.RetrieveResult)
    return None
