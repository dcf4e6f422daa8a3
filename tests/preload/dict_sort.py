"""Builds a dict of a million entries, drops a third, grows it again, sorts
it and prints a digest (tests/preload/run.sh python). The loops are the
interpreter's own (dict, zip, map, sorted, join): millions of objects made
and freed in a couple of seconds."""
import hashlib
import random

N = 1_000_000
rng = random.Random(5)
hexes = rng.randbytes(6 * N).hex()
keys = [hexes[i:i + 12] for i in range(0, 12 * N, 12)]
d = dict(zip(keys, map(str, range(N))))
for key in keys[::3]:
    del d[key]
d.update(zip(map("n{:07d}".format, range(N // 3)), map(list, zip(range(N // 3)))))

items = sorted(d.items(), key=lambda item: item[0])
text = "\n".join(map(repr, items))
print(len(d), items[0], items[-1], hashlib.sha256(text.encode()).hexdigest())
