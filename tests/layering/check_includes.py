#!/usr/bin/env python3
"""Checks every #include of moerun's sources against the layers declared in cmake/layers.txt.

A file in layer L may include headers of L and of the layers L names; headers of a private
folder (say runtime/cpu) only from inside that folder's layer; tests/ and bench/ may include
anything. A source file outside every declared layer is an error too: a new folder must be
declared before it holds code. Standard library only.

  check_includes.py SOURCE_DIR [--pretend FILE=HEADER ...]

--pretend adds an include of HEADER to FILE before checking, so that a test can show that a
wrong include is caught without editing the tree. Exit 0 when every include is allowed, 1
with one line per violation otherwise.
"""
import argparse
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)
SOURCE_SUFFIXES = (".h", ".hpp", ".cpp", ".cc")
EVERYTHING_ABOVE = ("tests", "bench")  # may include any layer
SKIP_DIRS = {".git", "build", "runs", "docs", "launch", "cmake"}


def read_layers(path):
    uses, private = {}, []
    with open(path, encoding="utf-8") as f:
        for line in f:
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if words[0] == "layer":
                uses[words[1]] = set(words[2:])
            elif words[0] == "private":
                private.append(words[1])
            else:
                raise SystemExit(f"{path}: unknown line '{line.strip()}' (expected 'layer' or 'private')")
    for name, deps in uses.items():
        unknown = deps - uses.keys()
        if unknown:
            raise SystemExit(f"{path}: layer '{name}' uses undeclared layer(s) {sorted(unknown)}")
    return uses, private


def sources(root):
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames if not (rel_dir == "." and d in SKIP_DIRS) and not d.startswith(".")]
        for name in filenames:
            if name.endswith(SOURCE_SUFFIXES):
                yield os.path.normpath(os.path.join(rel_dir, name))


def check(root, pretend):
    uses, private = read_layers(os.path.join(root, "cmake", "layers.txt"))
    problems = []
    for rel in sorted(sources(root)):
        top = rel.split(os.sep, 1)[0]
        if top in EVERYTHING_ABOVE:
            continue
        if top not in uses:
            problems.append(f"{rel}: not in any layer of cmake/layers.txt (declare its folder there)")
            continue
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            text = f.read()
        included = INCLUDE.findall(text) + pretend.get(rel, [])
        allowed = uses[top] | {top}
        for header in included:
            target = header.split("/", 1)[0]
            if "/" not in header or target not in uses:
                continue  # a header next to the file, or a library's
            if target not in allowed:
                problems.append(f"{rel}: includes \"{header}\": layer '{top}' may include only "
                                f"{', '.join(sorted(allowed))} (cmake/layers.txt)")
                continue
            for folder in private:
                if header.startswith(folder + "/") and top != folder.split("/", 1)[0]:
                    problems.append(f"{rel}: includes \"{header}\": {folder}/ is private to layer "
                                    f"'{folder.split('/', 1)[0]}' (cmake/layers.txt)")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source_dir")
    parser.add_argument("--pretend", action="append", default=[], metavar="FILE=HEADER")
    args = parser.parse_args()
    pretend = {}
    for item in args.pretend:
        file, _, header = item.partition("=")
        pretend.setdefault(os.path.normpath(file), []).append(header)
    problems = check(os.path.abspath(args.source_dir), pretend)
    for p in problems:
        print(p)
    if problems:
        print(f"layering: {len(problems)} include(s) against cmake/layers.txt")
        return 1
    print("layering: every include goes down the declared layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
