"""Markdown summary of a LANDSCAPE_BADINPUT_REPORT file (failures grouped by kind).

    python tests/bad_input_table.py bad-inputs.jsonl
"""
import collections
import json
import sys

rows = {}
for line in open(sys.argv[1]):
    if line.strip():
        r = json.loads(line)
        rows[r["id"]] = r
groups = collections.defaultdict(list)
for r in rows.values():
    p = r["problems"]
    if not p:
        key = "ok"
    elif any(x.startswith("traceback") for x in p):
        key = "traceback" + (" after writing to the store" if any("store" in x for x in p) else "")
    elif "accepted" in p:
        key = "wrongly accepted"
    elif any(x.startswith("store") for x in p):
        key = "clean error, but after writing to the store"
    elif any("error lines" in x or x.startswith("exit") for x in p):
        key = "wrong exit status or error lines"
    elif any(x.startswith("valid input refused") for x in p):
        key = "valid input refused"
    else:
        key = "clean error, message lacks the offending name"
    groups[key].append(r)
print(f"{len(rows)} inputs: " + ", ".join(f"{len(v)} {k}" for k, v in sorted(groups.items())))
for key, items in sorted(groups.items()):
    if key == "ok":
        continue
    print(f"\n### {key} ({len(items)})\n")
    for r in sorted(items, key=lambda r: r["id"]):
        detail = "; ".join(x for x in r["problems"] if not x.startswith("store ") or True)
        print(f"- `{r['id']}`: {detail}")
