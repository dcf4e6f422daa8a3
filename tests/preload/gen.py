#!/usr/bin/python3
"""Deterministic inputs for tests/preload/run.sh, from a fixed seed.

gen.py text MB FILE     lines of words and numbers (sort, gzip, xz)
gen.py c FILE           a C program of a few hundred functions (gcc)
gen.py sql FILE         tables, 1e5 rows in transactions, indexes, queries (sqlite3)
gen.py tree DIR N       the files of commit N of a repository (git)
"""
import os
import random
import sys

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "qu", "xo", "py"]


def words(rng, n):
    return ["".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))) for _ in range(n)]


def text(mb, path):
    rng = random.Random(1)
    vocab = words(rng, 4096)
    out, size = [], 0
    while size < mb << 20:
        w = rng.choices(vocab, k=3000)
        n = rng.choices(range(10000000), k=1000)
        chunk = "".join(f"{w[3 * i]} {w[3 * i + 1]} {n[i]:07d} {w[3 * i + 2]}\n" for i in range(1000))
        out.append(chunk)
        size += len(chunk)
    with open(path, "w") as f:
        f.write("".join(out))


def c_program(path):
    rng = random.Random(2)
    nfunc = 300
    lines = ["#include <stdio.h>", "#include <string.h>"]
    for i in range(nfunc):
        tab = ", ".join(str(rng.getrandbits(32)) + "u" for _ in range(16))
        m, s, n = rng.getrandbits(32) | 1, rng.randint(3, 29), rng.randint(4, 40)
        lines += [
            f"static const unsigned tab{i}[16] = {{ {tab} }};",
            f"static unsigned f{i}(unsigned x)",
            "{",
            f"\tunsigned acc = x ^ {rng.getrandbits(32)}u;",
            "\tchar buf[32];",
            f"\tfor (unsigned k = 0; k < (x & 15) + {n}; k++) {{",
            "\t\tswitch ((acc ^ k) & 3) {",
            f"\t\tcase 0: acc = acc * {m}u + tab{i}[k & 15]; break;",
            f"\t\tcase 1: acc ^= acc >> {s}; break;",
            f"\t\tcase 2: acc += (unsigned)snprintf(buf, sizeof(buf), \"%u\", acc) + (unsigned)strlen(buf); break;",
            f"\t\tdefault: acc = (acc << {s}) | (acc >> {32 - s});",
            "\t\t}",
            "\t}",
            "\treturn acc;",
            "}",
        ]
    lines.append("static unsigned (*const funcs[])(unsigned) = { " +
                 ", ".join(f"f{i}" for i in range(nfunc)) + " };")
    lines += [
        "int main(void)",
        "{",
        "\tunsigned x = 12345, sum = 0;",
        f"\tfor (int i = 0; i < {nfunc}; i++) {{",
        "\t\tx = x * 1103515245u + 12345u;",
        "\t\tsum = sum * 31 + funcs[i](x);",
        "\t\tif (i % 50 == 49)",
        "\t\t\tprintf(\"%d %08x\\n\", i, sum);",
        "\t}",
        "\treturn 0;",
        "}",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def sql(path):
    rng = random.Random(3)
    vocab = words(rng, 2000)
    out = [
        "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, price REAL, note TEXT);",
        "CREATE TABLE tag (item INTEGER, tag TEXT);",
    ]
    for batch in range(10):
        out.append("BEGIN;")
        for i in range(batch * 10000, (batch + 1) * 10000):
            name, note = rng.choice(vocab), " ".join(rng.choices(vocab, k=rng.randint(0, 12)))
            out.append(f"INSERT INTO item VALUES ({i}, '{name}', {rng.randrange(100)}, "
                       f"{rng.randrange(100000) / 100}, '{note}');")
            if i % 3 == 0:
                out.append(f"INSERT INTO tag VALUES ({i}, '{rng.choice(vocab[:50])}');")
        out.append("COMMIT;")
    out += [
        "CREATE INDEX item_name ON item(name);",
        "CREATE INDEX tag_tag ON tag(tag, item);",
        "DELETE FROM item WHERE id % 7 = 0;",
        "SELECT grp, count(*), round(sum(price), 2), min(name), max(name) FROM item GROUP BY grp ORDER BY grp;",
        "SELECT tag, count(*), round(avg(price), 2) FROM tag JOIN item ON item.id = tag.item "
        "GROUP BY tag ORDER BY count(*) DESC, tag;",
        "SELECT name, id, length(note) FROM item ORDER BY note DESC, id LIMIT 200;",
        "SELECT count(DISTINCT name), sum(length(note)) FROM item;",
        "PRAGMA integrity_check;",
    ]
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def tree(root, commit):
    """300 files; each commit rewrites, appends to and deletes some of them."""
    rng = random.Random(4)
    vocab = words(rng, 1000)
    files = {f"d{i % 12}/f{i}.txt": [" ".join(rng.choices(vocab, k=8)) for _ in range(rng.randint(20, 300))]
             for i in range(300)}
    for c in range(2, commit + 1):
        for name in rng.sample(sorted(files), 60):
            body = files[name]
            for _ in range(rng.randint(1, 10)):
                body[rng.randrange(len(body))] = " ".join(rng.choices(vocab, k=8))
            body += [" ".join(rng.choices(vocab, k=8)) for _ in range(rng.randint(0, 30))]
        for name in rng.sample(sorted(files), 5):
            del files[name]
        for i in range(10):
            files[f"new{c}/g{i}.txt"] = [" ".join(rng.choices(vocab, k=8)) for _ in range(40)]
    for name, body in files.items():
        os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
        with open(os.path.join(root, name), "w") as f:
            f.write("\n".join(body) + "\n")


if __name__ == "__main__":
    kind, args = sys.argv[1], sys.argv[2:]
    if kind == "text":
        text(int(args[0]), args[1])
    elif kind == "c":
        c_program(args[0])
    elif kind == "sql":
        sql(args[0])
    elif kind == "tree":
        tree(args[0], int(args[1]))
    else:
        sys.exit(f"gen.py: unknown kind {kind}")
