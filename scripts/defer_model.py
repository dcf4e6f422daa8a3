#!/usr/bin/env python3
"""A model of bench_defer's random-order churn: unmap calls per freed page.

WINDOW live 4 KiB buffers; each step frees one at random and allocates its
replacement. Every PASS frees, a pass unmaps what was freed since the last
one: one call per range of freed pages that no live page splits. Compared:

  first    first-fit allocation (the library's), ranges of adjacent pages;
  next     next-fit (a rotating cursor: fresh pages before holes);
  +holes   a range may also span pages unmapped earlier (free, not live);
  whole    each 2 MiB segment mapped once, filled once, unmapped when its
           last buffer is freed: also the freed pages it holds meanwhile
           (unusable until then), against the 2048 of IOALLOC_DEFER_CAP_MB.

Usage: scripts/defer_model.py [STEPS]   (docs/deferral.md, "The numbers")
"""
import random
import sys

WINDOW, PAGES, SEGMENT = 256, 4096, 512
LIVE, FREED, FREE = 0, 1, 2


def per_page(policy, holes, batch, steps):
    rnd = random.Random(1)
    st, cursor = [FREE] * PAGES, 0

    def alloc():
        nonlocal cursor
        i = st.index(FREE) if policy == "first" else cursor
        while st[i] != FREE:
            i = (i + 1) % PAGES
        cursor = (i + 1) % PAGES
        st[i] = LIVE
        return i

    live = [alloc() for _ in range(WINDOW)]
    unmaps = 0
    for step in range(1, steps + 1):
        k = rnd.randrange(WINDOW)
        st[live[k]] = FREED
        live[k] = alloc()
        if step % batch:
            continue
        in_range = False
        for i in range(PAGES):
            if st[i] == FREED:
                unmaps += not in_range
                in_range = True
                st[i] = FREE
            elif st[i] == LIVE or not holes:
                in_range = False
    return unmaps / steps


def whole_segments(steps):
    rnd = random.Random(1)
    live_in, seg, used, unmaps, held_max, held_sum = {}, 0, 0, 0, 0, 0

    def alloc():
        nonlocal seg, used
        if used == SEGMENT:
            seg, used = seg + 1, 0
        used += 1
        live_in[seg] = live_in.get(seg, 0) + 1
        return seg

    live = [alloc() for _ in range(WINDOW)]
    for _ in range(steps):
        k = rnd.randrange(WINDOW)
        s = live[k]
        live_in[s] -= 1
        if not live_in[s] and s != seg:
            del live_in[s]
            unmaps += 1
        live[k] = alloc()
        held = len(live_in) * SEGMENT - WINDOW - (SEGMENT - used)
        held_max, held_sum = max(held_max, held), held_sum + held
    return unmaps / steps, held_sum / steps, held_max


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    print("frees/pass  first  first+holes  next  next+holes")
    for batch in (256, 1024, 2048):
        row = [per_page(p, h, batch, steps) for p in ("first", "next") for h in (0, 1)]
        print(f"{batch:10d}  " + "  ".join(f"{v:.3f}" for v in row))
    u, mean, peak = whole_segments(steps)
    print(f"whole segments: {u:.4f} unmaps per page; freed pages held: mean {mean:.0f}, "
          f"peak {peak}")


if __name__ == "__main__":
    main()
