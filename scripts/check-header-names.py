#!/usr/bin/env python3
"""Fails if include/boxlite.h declares a name without the boxlite_/BOXLITE_ prefix: every
macro, typedef, struct, enum value and function of the C API is prefixed, so that nothing
of the library's internals (a Rust constant cbindgen picked up) leaks into a C program's
namespace. Usage: check-header-names.py [HEADER] (default include/boxlite.h);
--self-test checks that the check itself fails on an unprefixed name."""
import re
import sys
import tempfile

PREFIXES = ("boxlite_", "BOXLITE_")
# The include guard and the C++ linkage lines are the header's own, not API names.
ALLOWED = {"BOXLITE_H", "__cplusplus"}

DECLARATIONS = [
    re.compile(r"^\s*#\s*define\s+([A-Za-z_]\w*)", re.M),
    re.compile(r"\b(?:struct|enum|union)\s+([A-Za-z_]\w*)"),
    # A function prototype at file scope: `type name(args);`.
    re.compile(r"^(?!typedef\b)[A-Za-z_][\w \*]*?\b([A-Za-z_]\w*)\s*\([^;{]*\)\s*;", re.M),
]


def typedef_names(text):
    """The name each `typedef ...;` declares: `(*name)(...)` for a function pointer, else
    the last identifier before the `;` (after any braced body)."""
    names = []
    for match in re.finditer(r"\btypedef\b", text):
        depth, end = 0, match.end()
        while end < len(text) and not (text[end] == ";" and depth == 0):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        statement = re.sub(r"\{.*\}", " ", text[match.end():end], flags=re.S)
        pointer = re.search(r"\(\s*\*\s*([A-Za-z_]\w*)\s*\)", statement)
        last = re.findall(r"[A-Za-z_]\w*", statement)
        if pointer or last:
            names.append(pointer.group(1) if pointer else last[-1])
    return names


def unprefixed(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    names = set(typedef_names(text))
    for pattern in DECLARATIONS:
        names.update(pattern.findall(text))
    return sorted(n for n in names if n not in ALLOWED and not n.startswith(PREFIXES))


def check(path):
    bad = unprefixed(open(path).read())
    for name in bad:
        print(f"check-header-names: {path} declares {name!r} without the boxlite_/BOXLITE_ prefix; "
              "rename it in src/ffi/ (or keep it out of src/ffi/) and regenerate the header", file=sys.stderr)
    return not bad


def self_test(path):
    text = open(path).read()
    ok = check(path)
    for injected in ["#define MAX_DOCUMENT_BYTES (4 << 20)\n", "typedef uint32_t engine_t;\n",
                     "const char *version_string(void);\n", "typedef struct spec_t spec_t;\n"]:
        with tempfile.NamedTemporaryFile("w", suffix=".h") as bad:
            bad.write(text.replace("#ifdef __cplusplus", injected + "#ifdef __cplusplus", 1))
            bad.flush()
            if not unprefixed(open(bad.name).read()):
                print(f"check-header-names: self-test: {injected.strip()!r} was not caught", file=sys.stderr)
                ok = False
    return ok


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--self-test":
        sys.exit(0 if self_test(args[1] if len(args) > 1 else "include/boxlite.h") else 1)
    sys.exit(0 if check(args[0] if args else "include/boxlite.h") else 1)
