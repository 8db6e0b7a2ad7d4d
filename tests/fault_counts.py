"""Sum a LANDSCAPE_FAULTS_REPORT file: cases, failing cases, and rows duplicated / missing /
phantom over every injection point (the counts acceptance 1 asks the notes to give).

    python tests/fault_counts.py faults.jsonl
"""
import collections
import json
import re
import sys

cases = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
kinds = collections.Counter()
by_label = collections.defaultdict(collections.Counter)
for c in cases:
    mode, phase, index, label = c["case"]
    for p in c["problems"]:
        m = re.search(r": (duplicated|phantom|missing) ", p) or re.search(r"rows (too many|missing)", p)
        if m:
            kind = "row " + m.group(1)
        elif p.startswith("stale temporary"):
            kind = "stale temporary file"
        elif re.match(r"(analysis|run) \S+ is ", p):
            kind = re.sub(r"^(analysis|run) \S+ is (\w+).*", r"\1 left \2", p)
        elif "traceback" in p:
            kind = re.sub(r"(Error|Exception)\b.*", r"\1", p)
        else:
            kind = re.sub(r"\d+", "N", re.split(r"[:\[(]", p)[0]).strip()
        kinds[kind] += 1
        by_label[f"{mode}:{label}"][kind] += 1
failing = sum(bool(c["problems"]) for c in cases)
print(f"{len(cases)} injection points, {failing} with problems")
for kind, n in kinds.most_common():
    print(f"  {n:5d}  {kind}")
print("by mode:kind of write")
for label, counter in sorted(by_label.items()):
    print(f"  {label:45s} " + ", ".join(f"{k} {v}" for k, v in counter.most_common()))
