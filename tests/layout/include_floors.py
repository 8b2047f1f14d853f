#!/usr/bin/env python3
"""The library's folders are floors (docs/architecture.md): a header includes only headers of its
own folder or of the floors below it. Prints every include that runs back up, and fails on any.
Usage: tests/layout/include_floors.py [INCLUDE_DIR]   (default: include/ beside this script's repo)"""
import pathlib
import re
import sys

# Lowest first; folders on one floor do not include each other.
FLOORS = [
    {"common"},
    {"detail"},
    {"distributed"},
    {"io"},
    {"format", "text"},
    {"policy"},
    {"backend"},
    {"model", "core", "init"},
    {"objective"},
    {"pipeline", "export"},
]
FLOOR_OF = {folder: level for level, folders in enumerate(FLOORS) for folder in folders}

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parents[2] / "include") / "gsq"
problems = []
for header in sorted(root.rglob("*")):
    if header.suffix not in (".hpp", ".cuh") or header.parent == root:
        continue
    folder = header.parent.name
    if folder not in FLOOR_OF:
        problems.append(f"{header.relative_to(root)}: folder '{folder}' is on no floor (add it to FLOORS and docs/architecture.md)")
        continue
    for line in header.read_text().splitlines():
        match = re.match(r'#include "gsq/([a-z_]+)/', line)
        if not match or match.group(1) == folder:
            continue
        target = match.group(1)
        if target not in FLOOR_OF:
            problems.append(f"{header.relative_to(root)} includes {target}/, which is on no floor")
        elif FLOOR_OF[target] >= FLOOR_OF[folder]:
            problems.append(f"{header.relative_to(root)} ({folder}/) includes {target}/: {line.split()[1]} is not on a floor below")
for problem in problems:
    print(problem)
print(f"{len(problems)} includes against the floors" if problems else "every include runs down a floor or stays on its own")
sys.exit(1 if problems else 0)
