#!/usr/bin/env python3
"""Structure check: file length, function length and module import cycles of the Rust tree.

Fails (exit 1, listing the offenders) when
  (a) a Rust source file outside tests has more than MAX_FILE_LINES lines,
  (b) a Rust `fn` body outside tests is longer than MAX_FN_LINES lines,
  (c) a crate's top-level modules import each other in a cycle.

Tests are left out: `tests/`, `benches/`, `examples/` and `fuzz/` folders, files named
`tests.rs`, and every item marked `#[cfg(test)]` or `#[test]` (their lines are not counted
towards a file's length and their functions are not measured).

Why top-level modules for cycles: a module folder (`api/`) is one room of the house; what a
newcomer must be able to read on its own is each room, so `api::registry -> config` counts as
`api -> config`. Paths that name an item the crate root re-exports are followed to the module
that defines it; the crate root itself is no node (it declares every module, so every module
would be in a cycle with it).

Usage: structure.py [--report] [--root DIR] [--self-test]
  --report     list everything, exit 0
  --self-test  run the checker on inline samples (exit 1 if it misjudges one)

Python 3 standard library only.
"""

import argparse
import os
import re
import sys

MAX_FILE_LINES = 500
MAX_FN_LINES = 80
TEST_DIRS = {"tests", "benches", "examples", "fuzz", "target", ".git"}

# ---------------------------------------------------------------------------------------------
# Lexer: identifiers and punctuation with line numbers; strings, chars, numbers and comments
# (doc comments included) never yield a brace or a path.

RAW_STR = re.compile(r'(?:b|c)?r(#*)"')
PLAIN_STR = re.compile(r'(?:b|c)?"')
BYTE_CHAR = re.compile(r"b'")
IDENT = re.compile(r"(?:r#)?[A-Za-z_][A-Za-z0-9_]*")
NUMBER = re.compile(r"[0-9][0-9A-Za-z_]*(?:\.[0-9][0-9A-Za-z_]*)?")


def lex(text):
    """Returns [(kind, value, line)] with kind in {"id", "p", "lit"}."""
    toks = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    line += text[i] == "\n"
                    i += 1
        elif (m := RAW_STR.match(text, i)) is not None:
            end = text.find('"' + m.group(1), m.end())
            end = n if end < 0 else end + 1 + len(m.group(1))
            toks.append(("lit", "str", line))
            line += text.count("\n", i, end)
            i = end
        elif (m := PLAIN_STR.match(text, i)) is not None:
            j = m.end()
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            toks.append(("lit", "str", line))
            line += text.count("\n", i, j)
            i = j + 1
        elif BYTE_CHAR.match(text, i) or c == "'":
            start = i + 1 if c == "b" else i
            j = start + 1
            if j < n and text[j] == "\\":
                k = text.find("'", j + 2)
                i = n if k < 0 else k + 1
                toks.append(("lit", "char", line))
            elif j + 1 < n and text[j + 1] == "'":
                i = j + 2
                toks.append(("lit", "char", line))
            else:  # a lifetime or loop label
                m = IDENT.match(text, j)
                i = m.end() if m else j
                toks.append(("lit", "lifetime", line))
        elif (m := IDENT.match(text, i)) is not None:
            toks.append(("id", m.group(0), line))
            i = m.end()
        elif (m := NUMBER.match(text, i)) is not None:
            toks.append(("lit", "num", line))
            i = m.end()
        elif text.startswith("::", i):
            toks.append(("p", "::", line))
            i += 2
        else:
            toks.append(("p", c, line))
            i += 1
    return toks


def match_brackets(toks):
    """Index of the matching close for every open bracket, and the other way round."""
    pairs, stack = {}, []
    for i, (kind, v, _) in enumerate(toks):
        if kind != "p":
            continue
        if v in "{([":
            stack.append(i)
        elif v in "})]" and stack:
            j = stack.pop()
            pairs[i], pairs[j] = j, i
    return pairs


# ---------------------------------------------------------------------------------------------
# Items: where an item starts and ends, which ones are tests.

SEMI_ITEMS = {"use", "const", "static", "type", "extern"}
MODIFIERS = {"pub", "async", "unsafe", "const", "extern", "default", "crate", "in", "super", "self"}


def attribute_end(toks, pairs, i):
    """i is a `#`; returns the index after its `[...]` (or i when it is no attribute)."""
    j = i + 1
    if j < len(toks) and toks[j][1] == "!":
        j += 1
    if j < len(toks) and toks[j][1] == "[" and j in pairs:
        return pairs[j] + 1
    return i


def is_test_attribute(toks, i, end):
    """`#[test]`, `#[tokio::test(...)]`, `#[cfg(test)]` (also inside `all(...)`)."""
    words = [t[1] for t in toks[i:end] if t[0] == "id"]
    if not words:
        return False
    if words[0] == "cfg":
        return "test" in words and "not" not in words
    path = []
    for t in toks[i + 2 : end]:
        if t[0] == "id" or t[1] == "::":
            path.append(t[1])
        else:
            break
    return bool(path) and path[-1] == "test"


def item_end(toks, pairs, i):
    """i is the first token of an item (after its attributes); returns its last index."""
    j = i
    while j < len(toks) and toks[j][0] == "id" and toks[j][1] in MODIFIERS:
        if toks[j][1] == "pub" and j + 1 < len(toks) and toks[j + 1][1] == "(":
            j = pairs.get(j + 1, j + 1)
        j += 1
    semi_only = j < len(toks) and toks[j][1] in SEMI_ITEMS and toks[j][1] != "extern"
    while j < len(toks):
        v = toks[j][1]
        if toks[j][0] == "p" and v == ";":
            return j
        if toks[j][0] == "p" and v in "([" and j in pairs:
            j = pairs[j]
        elif toks[j][0] == "p" and v == "{" and j in pairs:
            if not semi_only:
                return pairs[j]
            j = pairs[j]
        j += 1
    return len(toks) - 1


def test_regions(toks, pairs):
    """Token index ranges [start, end] of test items, and whether the whole file is a test."""
    regions, i = [], 0
    while i < len(toks):
        if toks[i][1] == "#" and toks[i][0] == "p":
            end = attribute_end(toks, pairs, i)
            if end > i:
                inner = i + 1 < len(toks) and toks[i + 1][1] == "!"
                if is_test_attribute(toks, i + (2 if inner else 1), end):
                    if inner:
                        return [(0, len(toks) - 1)], True
                    j = end
                    while j < len(toks) and toks[j][1] == "#":
                        j2 = attribute_end(toks, pairs, j)
                        if j2 == j:
                            break
                        j = j2
                    last = item_end(toks, pairs, j)
                    regions.append((i, last))
                    i = last + 1
                    continue
                i = end
                continue
        i += 1
    return regions, False


def in_regions(regions, i):
    return any(a <= i <= b for a, b in regions)


# ---------------------------------------------------------------------------------------------
# (a) and (b): file and function length.


def file_length(text, toks, regions):
    """Lines of the file, less the lines that only test items occupy."""
    total = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    test_lines = set()
    for a, b in regions:
        test_lines.update(range(toks[a][2], toks[b][2] + 1))
    code_lines = {t[2] for i, t in enumerate(toks) if not in_regions(regions, i)}
    return total - len(test_lines - code_lines)


def long_functions(toks, pairs, regions, limit):
    """[(line, name, body lines)] of fns whose body (from `{` to `}`) is longer than limit."""
    found = []
    for i, (kind, v, line) in enumerate(toks):
        if kind != "id" or v != "fn" or i + 1 >= len(toks) or toks[i + 1][0] != "id":
            continue
        if in_regions(regions, i):
            continue
        j = i + 2
        while j < len(toks):
            k, w, _ = toks[j]
            if k == "p" and w in "([" and j in pairs:
                j = pairs[j]
            elif k == "p" and w in "{;":
                break
            j += 1
        if j >= len(toks) or toks[j][1] != "{" or j not in pairs:
            continue
        body = toks[pairs[j]][2] - toks[j][2] + 1
        if body > limit:
            found.append((line, toks[i + 1][1], body))
    return found


# ---------------------------------------------------------------------------------------------
# (c): module graph of each crate.


def crate_roots(files):
    """(package dir, crate root file) for every lib.rs, main.rs and src/bin/*.rs."""
    roots = []
    for path in sorted(files):
        parts = path.split("/")
        if len(parts) >= 2 and parts[-2] == "src" and parts[-1] in ("lib.rs", "main.rs"):
            roots.append(("/".join(parts[:-2]) or ".", path))
        elif len(parts) >= 3 and parts[-3] == "src" and parts[-2] == "bin":
            roots.append(("/".join(parts[:-3]) or ".", path))
    return roots


def child_dir(path, is_root):
    d, base = os.path.split(path)
    if is_root or base == "mod.rs":
        return d
    return os.path.join(d, base[:-3])


def module_tree(files, parsed, root):
    """{module path tuple: file} from `mod name;` declarations, test modules left out."""
    modules, todo = {(): root}, [((), root, True)]
    while todo:
        mod, path, is_root = todo.pop()
        toks, pairs, regions, _ = parsed[path]
        for i, (kind, v, _line) in enumerate(toks):
            if kind != "id" or v != "mod" or in_regions(regions, i):
                continue
            if i + 2 < len(toks) and toks[i + 1][0] == "id" and toks[i + 2][1] == ";":
                name = toks[i + 1][1]
                base = child_dir(path, is_root)
                for cand in (f"{base}/{name}.rs", f"{base}/{name}/mod.rs"):
                    cand = os.path.normpath(cand)
                    if cand in files and not parsed[cand][3]:
                        modules[mod + (name,)] = cand
                        todo.append((mod + (name,), cand, False))
                        break
    return modules


def use_paths(toks, i):
    """Expands the use tree starting at toks[i]; returns ([path segments], index of `;`)."""
    out = []

    def tree(j, prefix):
        path = list(prefix)
        while j < len(toks):
            k, v, _ = toks[j]
            if k == "id" and v != "as":
                path.append(v)
                j += 1
            elif v == "::":
                j += 1
            elif v == "{":
                j += 1
                while j < len(toks) and toks[j][1] != "}":
                    j = tree(j, path)
                    if j < len(toks) and toks[j][1] == ",":
                        j += 1
                return j + 1
            else:
                break
        if k == "id" and v == "as":
            j += 2
        out.append(path)
        return j

    j = tree(i, [])
    while j < len(toks) and toks[j][1] != ";":
        j += 1
    return out, j


def code_paths(toks, regions):
    """Every `crate::…`/`super::…` path outside tests, as (segments, line)."""
    found, i = [], 0
    while i < len(toks):
        kind, v, line = toks[i]
        if in_regions(regions, i):
            i += 1
            continue
        if kind == "id" and v == "use":
            paths, end = use_paths(toks, i + 1)
            found += [(p, line) for p in paths if p and p[0] in ("crate", "super")]
            i = end + 1
            continue
        prev = toks[i - 1][1] if i else ""
        if kind == "id" and v in ("crate", "super") and prev not in ("::", "$"):
            seg, j = [v], i + 1
            while j + 1 < len(toks) and toks[j][1] == "::" and toks[j + 1][0] == "id":
                seg.append(toks[j + 1][1])
                j += 2
            if len(seg) > 1:
                found.append((seg, line))
            i = j
            continue
        i += 1
    return found


def root_reexports(parsed, root):
    """{name: module path} for `pub use module::…::Name` at the crate root."""
    toks, _, regions, _ = parsed[root]
    names = {}
    for i, (kind, v, _line) in enumerate(toks):
        if kind == "id" and v == "use" and not in_regions(regions, i):
            for p in use_paths(toks, i + 1)[0]:
                segs = [s for s in p if s not in ("crate", "self")]
                if len(segs) >= 2:
                    names[segs[-1]] = tuple(segs[:-1])
    return names


def resolve(segs, current, modules, reexports):
    """The module a path names (its longest existing prefix), or None for the root's items."""
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    else:
        base, rest = current, segs
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
    target = base
    for s in rest:
        if target + (s,) in modules:
            target = target + (s,)
        else:
            if target == () and s in reexports:
                target = reexports[s]
            break
    return target or None


def import_cycles(files, parsed, depth=1):
    """[(crate, [modules], [(from, to, file:line)])] for every cycle of top-level modules."""
    cycles = []
    for package, root in crate_roots(files):
        if parsed[root][3]:
            continue
        modules = module_tree(files, parsed, root)
        reexports = root_reexports(parsed, root)
        graph, evidence = {}, {}
        for mod, path in modules.items():
            if not mod:
                continue
            src = "::".join(mod[:depth])
            graph.setdefault(src, set())
            toks, _, regions, _ = parsed[path]
            for segs, line in code_paths(toks, regions):
                target = resolve(segs, mod, modules, reexports)
                if not target:
                    continue
                dst = "::".join(target[:depth])
                if dst != src:
                    graph[src].add(dst)
                    evidence.setdefault((src, dst), f"{path}:{line}")
        for scc in strongly_connected(graph):
            if len(scc) > 1:
                members = set(scc)
                edges = sorted(
                    (a, b, evidence[(a, b)]) for a in scc for b in graph[a] if b in members
                )
                name = f"{package}/{os.path.basename(root)}"
                cycles.append((name, sorted(scc), edges))
    return cycles


def strongly_connected(graph):
    """Tarjan's algorithm (iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    scc = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        scc.append(w)
                        if w == node:
                            break
                    out.append(scc)
    return out


# ---------------------------------------------------------------------------------------------
# Driver.


def is_test_path(path):
    parts = path.split("/")
    return any(p in TEST_DIRS for p in parts[:-1]) or parts[-1] == "tests.rs"


def analyse(files):
    """files: {relative path: text}. Returns (long files, long fns, cycles, files checked)."""
    parsed = {}
    for path, text in files.items():
        toks = lex(text)
        pairs = match_brackets(toks)
        regions, whole = test_regions(toks, pairs)
        parsed[path] = (toks, pairs, regions, whole or is_test_path(path))
    long_files, long_fns, checked = [], [], 0
    for path in sorted(files):
        toks, pairs, regions, is_test = parsed[path]
        if is_test:
            continue
        checked += 1
        lines = file_length(files[path], toks, regions)
        if lines > MAX_FILE_LINES:
            long_files.append((path, lines))
        for line, name, body in long_functions(toks, pairs, regions, MAX_FN_LINES):
            long_fns.append((path, line, name, body))
    return long_files, long_fns, import_cycles(files, parsed), checked


def read_tree(root):
    files = {}
    for d, dirs, names in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in ("target", ".git"))
        for name in names:
            if name.endswith(".rs"):
                full = os.path.join(d, name)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                with open(full, encoding="utf-8", errors="replace") as f:
                    files[rel] = f.read()
    return files


def print_report(long_files, long_fns, cycles, checked):
    for path, lines in sorted(long_files, key=lambda x: -x[1]):
        print(f"long file: {path}: {lines} lines (limit {MAX_FILE_LINES})")
    for path, line, name, body in sorted(long_fns, key=lambda x: -x[3]):
        print(f"long fn: {path}:{line} {name}: {body} lines (limit {MAX_FN_LINES})")
    for crate, members, edges in cycles:
        print(f"import cycle in {crate}: {{{', '.join(members)}}}")
        for a, b, where in edges:
            print(f"    {a} -> {b}  ({where})")
    print(
        f"structure: {len(long_files)} files over {MAX_FILE_LINES} lines, "
        f"{len(long_fns)} fns over {MAX_FN_LINES} lines, {len(cycles)} import cycles "
        f"({checked} files checked)"
    )


# ---------------------------------------------------------------------------------------------
# Self-test: inline samples the checker must judge right.

SAMPLE_FN = '''
/// Doc comment naming crate::b and a brace {
fn tricky<'a>(x: &'a str) -> impl Fn() -> u32 {
    let _s = "}}} fn fake() {";
    let _r = r#"}" fn raw() {"#;
    let _c = '{';
    let _d = '\\'';
    let _b = b'}';
    /* block { /* nested } */ */
    'outer: loop { break 'outer; }
''' + "    let _pad = 0;\n" * 80 + '''    || 1
}

fn short() -> u32 { 1 }

trait T { fn declared(&self); }

#[cfg(test)]
mod tests {
    fn long_test() {
''' + "        let _x = 1;\n" * 90 + '''    }
}
'''

SAMPLE_CRATE = {
    "k/src/lib.rs": "pub mod a;\nmod b;\nmod c;\nmod d;\n#[cfg(test)]\nmod t;\npub use c::Thing;\n",
    "k/src/a.rs": "use crate::{b::{self, X}, d};\n/// crate::c::Y in a doc comment is no edge\nfn f() {}\n",
    "k/src/b/mod.rs": "mod inner;\n",
    "k/src/b/inner.rs": "use super::super::a::f;\nfn g() { crate::Thing::new(); }\n",
    "k/src/c.rs": "pub struct Thing;\nfn h() { let _ = crate::b::X; }\n",
    "k/src/d.rs": "#[cfg(test)]\nuse crate::a::f;\nfn i() { let _ = \"crate::a::f\"; }\n",
    "k/src/t.rs": "use crate::a::f;\n",
}


def self_test():
    failures = []

    def expect(what, got, want):
        if got != want:
            failures.append(f"{what}: got {got!r}, want {want!r}")

    toks = lex(SAMPLE_FN)
    pairs = match_brackets(toks)
    regions, whole = test_regions(toks, pairs)
    expect("whole file is test", whole, False)
    fns = long_functions(toks, pairs, regions, MAX_FN_LINES)
    expect("long fns found", [(name, body) for _, name, body in fns], [("tricky", 90)])
    lines = file_length(SAMPLE_FN, toks, regions)
    expect("file length without the test module", lines, SAMPLE_FN.count("\n") - 95)

    long_files, long_fns, cycles, _ = analyse(
        {"x/src/lib.rs": "fn a() {}\n" * 501, "x/tests/big.rs": "fn a() {}\n" * 900}
    )
    expect("long files", long_files, [("x/src/lib.rs", 501)])

    _, _, cycles, _ = analyse(SAMPLE_CRATE)
    expect("cycles", [(c, m) for c, m, _ in cycles], [("k/lib.rs", ["a", "b", "c"])])
    expect(
        "cycle edges",
        [(a, b) for a, b, _ in cycles[0][2]] if cycles else [],
        [("a", "b"), ("b", "a"), ("b", "c"), ("c", "b")],
    )

    acyclic = dict(SAMPLE_CRATE)
    acyclic["k/src/c.rs"] = "pub struct Thing;\n"
    _, _, cycles, _ = analyse(acyclic)
    expect("cycles once c no longer names b", [(c, m) for c, m, _ in cycles], [
        ("k/lib.rs", ["a", "b"])
    ])

    for f in failures:
        print(f"self-test FAILED: {f}")
    print(f"structure self-test: {'FAILED' if failures else 'ok'} ({len(failures)} failures)")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--report", action="store_true", help="list everything, exit 0")
    ap.add_argument("--self-test", action="store_true", help="check the checker")
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), ".."))
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    long_files, long_fns, cycles, checked = analyse(read_tree(os.path.abspath(args.root)))
    print_report(long_files, long_fns, cycles, checked)
    if args.report:
        return 0
    return 1 if (long_files or long_fns or cycles) else 0


if __name__ == "__main__":
    sys.exit(main())
