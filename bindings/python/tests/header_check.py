"""Compares boxlite._ffi (the ctypes declarations) with include/boxlite.h.

`problems(header_text)` returns a list of differences (empty when they agree): functions
(names, argument counts, argument and return types), callback typedefs, structs (field
names and types, so their layout), the integer #defines, the error classes and the
`*_INIT` initialisers (one value per field)."""

from __future__ import annotations

import ctypes
import re
from typing import Any, Dict, List, Tuple

from boxlite import _ffi, errors

INTS = {
    "uint8_t": ctypes.c_uint8,
    "uint16_t": ctypes.c_uint16,
    "uint32_t": ctypes.c_uint32,
    "uint64_t": ctypes.c_uint64,
    "int32_t": ctypes.c_int32,
    "int64_t": ctypes.c_int64,
    "size_t": ctypes.c_size_t,
    "bool": ctypes.c_bool,
    "double": ctypes.c_double,
}


class Header:
    def __init__(self, text: str) -> None:
        text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        text = re.sub(r"//[^\n]*", "", text)
        self.aliases: Dict[str, str] = dict((n, t) for t, n in re.findall(r"typedef ([\w ]+?) (\w+);", text) if t.split()[0] != "struct")
        self.callbacks: Dict[str, Tuple[str, List[str]]] = {
            name: (ret.strip(), _split_args(args)) for ret, name, args in re.findall(r"typedef ([\w \*]+?)\s*\(\*(\w+)\)\((.*?)\);", text, re.S)
        }
        self.structs: Dict[str, List[Tuple[str, str]]] = {}
        for body, name in re.findall(r"typedef struct \{(.*?)\} (\w+);", text, re.S):
            fields = []
            for decl in body.split(";"):
                decl = " ".join(decl.split())
                if decl:
                    m = re.match(r"(.*?)(\w+)$", decl)
                    assert m, decl
                    fields.append((m.group(2), m.group(1).strip()))
            self.structs[name] = fields
        self.opaque = set(re.findall(r"typedef struct (\w+) \1;", text))
        self.defines: Dict[str, int] = {n: int(v) for n, v in re.findall(r"^#define (BOXLITE_\w+) (-?\d+)\s*$", text, re.M)}
        self.inits: Dict[str, Tuple[str, int]] = {
            name: (struct, len(values.split(",")))
            for name, struct, values in re.findall(r"^#define (BOXLITE_\w+_INIT) \{ \(uint32_t\)sizeof\((\w+)\),(.*?)\}", text, re.M)
        }
        start = text.index('extern "C" {')
        self.functions: Dict[str, Tuple[str, List[str]]] = {}
        for decl in re.findall(r"^[^#\n}][^;{}]*?\);", text[start:], re.M):
            decl = " ".join(decl.split())
            m = re.match(r"(.+?[\s\*])(boxlite_\w+)\((.*)\);$", decl)
            if m:
                self.functions[m.group(2)] = (m.group(1).strip(), _split_args(m.group(3)))


def _split_args(args: str) -> List[str]:
    args = args.strip()
    if args in ("void", ""):
        return []
    types = []
    for arg in args.split(","):
        m = re.match(r"(.*?[\s\*])(\w+)$", " ".join(arg.split()))
        types.append(m.group(1).strip() if m else arg.strip())
    return types


def _resolve(header: Header, ctype: str) -> str:
    ctype = ctype.replace("const ", "").strip()
    while ctype in header.aliases:
        ctype = header.aliases[ctype]
    return ctype


def _matches(header: Header, ctype: str, py: Any) -> bool:
    """Whether the ctypes type `py` declares the C type `ctype` of the header."""
    c = _resolve(header, ctype)
    stars = c.count("*")
    base = _resolve(header, c.replace("*", "").strip())
    if stars == 0:
        if base == "void":
            return py is None
        if base in header.callbacks:
            return py is _ffi.CALLBACKS.get(base)
        return base in INTS and py is INTS[base]
    if stars == 1:
        if base in header.structs:
            return py is ctypes.POINTER(_ffi.STRUCTS[base]) if base in _ffi.STRUCTS else False
        if base in ("char", "uint8_t"):
            return py in (ctypes.c_char_p, ctypes.c_void_p)
        if base in INTS:
            return py is ctypes.POINTER(INTS[base])
        return py is ctypes.c_void_p and (base in header.opaque or base == "void")
    if stars == 2:
        return py in (ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_char_p))
    return False


def problems(text: str) -> List[str]:
    header = Header(text)
    found: List[str] = []
    # functions: every one of the header declared, with the same signature
    for name in sorted(set(header.functions) - set(_ffi.FUNCTIONS)):
        found.append(f"{name}: in the header, not declared in boxlite/_ffi.py")
    for name in sorted(set(_ffi.FUNCTIONS) - set(header.functions)):
        found.append(f"{name}: declared in boxlite/_ffi.py, not in the header")
    for name in sorted(set(header.functions) & set(_ffi.FUNCTIONS)):
        ret, args = header.functions[name]
        py_ret, py_args = _ffi.FUNCTIONS[name]
        if len(args) != len(py_args):
            found.append(f"{name}: {len(args)} arguments in the header, {len(py_args)} in the binding")
            continue
        if _resolve(header, ret) == "boxlite_error_t *":
            if py_ret is not _ffi.ERROR:
                found.append(f"{name}: returns boxlite_error_t *, declared {py_ret}")
        elif not _matches(header, ret, py_ret):
            found.append(f"{name}: returns {ret}, declared {py_ret}")
        for i, (a, p) in enumerate(zip(args, py_args)):
            if not _matches(header, a, p):
                found.append(f"{name}: argument {i + 1} is {a} in the header, {p} in the binding")
    # callback typedefs
    for name, (ret, args) in header.callbacks.items():
        proto = _ffi.CALLBACKS.get(name)
        if proto is None:
            found.append(f"callback type {name}: not declared")
            continue
        if len(args) != len(proto._argtypes_) or not _matches(header, ret, proto._restype_):
            found.append(f"callback type {name}: signature differs")
            continue
        for i, (a, p) in enumerate(zip(args, proto._argtypes_)):
            # the binding reads borrowed data pointers as addresses (c_void_p)
            if not (_matches(header, a, p) or (p is ctypes.c_void_p and "*" in a)):
                found.append(f"callback type {name}: argument {i + 1} is {a}, declared {p}")
    # structs: the same fields, in order, of the same types (so the same layout)
    for name, fields in header.structs.items():
        cls = _ffi.STRUCTS.get(name)
        if cls is None:
            found.append(f"struct {name}: not declared")
            continue
        py_fields = cls._fields_
        if [f for f, _ in fields] != [f for f, _ in py_fields]:
            found.append(f"struct {name}: fields {[f for f, _ in fields]} in the header, {[f for f, _ in py_fields]} in the binding")
            continue
        for (fname, ftype), (_, ptype) in zip(fields, py_fields):
            if not _matches(header, ftype, ptype):
                found.append(f"struct {name}.{fname}: {ftype} in the header, {ptype} in the binding")
    # integer #defines
    for name, value in header.defines.items():
        if getattr(_ffi, name, None) != value:
            found.append(f"#define {name} {value}: the binding has {getattr(_ffi, name, None)}")
    # initialisers: one value per field
    for name, (struct, count) in header.inits.items():
        if struct in header.structs and count + 1 != len(header.structs[struct]):
            found.append(f"{name}: {count + 1} values for {len(header.structs[struct])} fields of {struct}")
    # one exception class per error code
    for name, value in header.defines.items():
        if name.startswith("BOXLITE_ERROR_"):
            cls = errors.BY_NAME.get(name[len("BOXLITE_ERROR_") :])
            if cls is None or cls.code != value:
                found.append(f"{name}: no exception class with code {value} in boxlite.errors")
    return found
