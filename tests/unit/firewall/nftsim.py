"""A tiny interpreter of the nft dialect the renderer emits, for unit tests.

It parses ``render_full`` output into plain data (tables -> sets/maps with elements,
chains with rules) and applies ``render_delta`` commands to that data, so a test can
check "full(old) + delta(old, new) == full(new)" without a kernel. It understands only
what the renderer writes and raises on anything else, so it cannot silently agree with
a renderer that emits something new.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Table:
    sets: dict[str, set[str]] = field(default_factory=dict)  # sets and maps alike
    types: dict[str, str] = field(default_factory=dict)
    chains: dict[str, list[str]] = field(default_factory=dict)
    counters: set[str] = field(default_factory=set)


def _split_elements(text: str) -> set[str]:
    return {e.strip() for e in text.split(",") if e.strip()}


class Ruleset:
    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], Table] = {}

    def load(self, script: str) -> "Ruleset":
        lines = script.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i].strip()
            i += 1
            if not line:
                continue
            m = re.fullmatch(r"table (\w+) (\w+)", line)
            if m:
                self.tables.setdefault((m[1], m[2]), Table())
                continue
            m = re.fullmatch(r"delete table (\w+) (\w+)", line)
            if m:
                del self.tables[(m[1], m[2])]
                continue
            m = re.fullmatch(r"table (\w+) (\w+) \{", line)
            if m:
                i = self._block(lines, i, self.tables.setdefault((m[1], m[2]), Table()))
                continue
            self.command(line)
        return self

    def _block(self, lines: list[str], i: int, t: Table) -> int:
        while True:
            line = lines[i].strip()
            i += 1
            if line == "}":
                return i
            m = re.fullmatch(r"counter (\S+) \{ \}", line)
            if m:
                t.counters.add(m[1])
                continue
            m = re.fullmatch(
                r"(?:set|map) (\S+) \{ (?:type|typeof) ([^;]+);(?: flags interval;)?(?: elements = \{ (.*) \})? \}", line)
            if m:
                t.types[m[1]] = m[2]
                t.sets[m[1]] = _split_elements(m[3] or "")
                continue
            m = re.fullmatch(r"chain (\S+) \{(.*)", line)
            if m:
                rules = []
                header = m[2].strip()
                if header:
                    rules.append(f"#hook {header}")
                while (r := lines[i].strip()) != "}":
                    rules.append(r)
                    i += 1
                i += 1
                t.chains[m[1]] = rules
                continue
            raise ValueError(f"unexpected line in table block: {line!r}")

    def command(self, line: str) -> None:
        m = re.fullmatch(r"(add|delete) element (\w+) (\w+) (\S+) \{ (.*) \}", line)
        if m:
            s = self.tables[(m[2], m[3])].sets[m[4]]
            elems = _split_elements(m[5])
            if m[1] == "add":
                keys = {e.split(" : ")[0] for e in s}
                if any(e.split(" : ")[0] in keys for e in elems):
                    raise ValueError(f"element exists: {line}")
                s |= elems
            else:
                if not elems <= s:
                    raise ValueError(f"deleting missing element: {line} ({elems - s})")
                s -= elems
            return
        m = re.fullmatch(r"add set (\w+) (\w+) (\S+) \{ type ([^;]+); flags interval; \}", line)
        if m:
            t = self.tables[(m[1], m[2])]
            t.sets.setdefault(m[3], set())
            t.types[m[3]] = m[4]
            return
        m = re.fullmatch(r"delete set (\w+) (\w+) (\S+)", line)
        if m:
            t = self.tables[(m[1], m[2])]
            if any(f"@{m[3]}" in r for rules in t.chains.values() for r in rules):
                raise ValueError(f"set still referenced: {line}")
            del t.sets[m[3]]
            return
        m = re.fullmatch(r"(add|flush|delete) chain (\w+) (\w+) (\S+)", line)
        if m:
            t = self.tables[(m[2], m[3])]
            if m[1] == "add":
                t.chains.setdefault(m[4], [])
            elif m[1] == "flush":
                t.chains[m[4]] = []
            else:
                if any(f"jump {m[4]}" in e for s in t.sets.values() for e in s):
                    raise ValueError(f"chain still referenced: {line}")
                del t.chains[m[4]]
            return
        m = re.fullmatch(r"add rule (\w+) (\w+) (\S+) (.*)", line)
        if m:
            t = self.tables[(m[1], m[2])]
            for ref in re.findall(r"@(\S+)", m[4]):
                if ref not in t.sets:
                    raise ValueError(f"rule refers to a missing set: {line}")
            t.chains[m[3]].append(m[4])
            return
        raise ValueError(f"unknown command: {line!r}")

    def snapshot(self) -> dict:
        return {k: (t.sets, t.chains, t.counters) for k, t in self.tables.items()}
