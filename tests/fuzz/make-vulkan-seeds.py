#!/usr/bin/env python3
# make-vulkan-seeds.py [DIR]
#
# Writes the seed corpus of fuzz-vulkan (default: corpus/vulkan/ beside
# this script): a handful of inputs that each reach one part of the layer
# on purpose, so that the fuzzer starts from sequences that already map,
# store, submit and observe instead of having to find them.  The encoding
# is fuzz-vulkan.c's (LLVMFuzzerTestOneInput and the op_* functions);
# change both together.  Rerun after changing the encoding and commit the
# files it writes.

import os
import struct
import sys

# Operation bytes (the switch in LLVMFuzzerTestOneInput: byte % 12).
ALLOC, FREE, MAP, UNMAP, STORE, LOAD, FLUSH_INVALIDATE, SUBMIT = 0, 1, 2, 3, 4, 6, 7, 8
OBSERVE = 10

# Observation paths (enum path).
FENCE_WAIT, FENCE_POLL, QUEUE_IDLE, DEVICE_IDLE, TIMELINE_WAIT, \
    TIMELINE_POLL, EVENT_POLL = range(7)

# buffer_sizes[] in fuzz-vulkan.c, by index.
SIZES = [4, 256, 1000, 1001, 4096, 4100, 4097, 12300, 65536, 65540, 200004,
         262140, 1048576]


def u8(v):
    return struct.pack("<B", v & 0xFF)


def u32(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


class Seed:
    def __init__(self, rng_seed):
        self.b = bytearray(u32(rng_seed))

    def alloc(self, slot, size, mapped=False, read_only=False, extra=0):
        """size: a byte count from SIZES; extra 1-7: memory larger than
        the buffer by 64 * extra + 3 bytes."""
        how = (7 if read_only else 0) | (0x08 if mapped else 0)
        if extra:
            how |= 0x10 | (extra << 5)
        self.b += u8(ALLOC) + u8(slot) + u8(how) + u8(SIZES.index(size))

    def free(self, slot, buffer_first=False):
        self.b += u8(FREE) + u8(1 if buffer_first else 0) + u8(slot)

    def map(self, slot, offset=None, size=None, page_offset=False):
        """offset None: whole; size None: VK_WHOLE_SIZE (size - 1 is what
        the decoder's 1 + b % room gives for b = size - 1)."""
        if offset is None:
            how = 0
        elif size is None:
            how = 1
        else:
            how = 3 if page_offset else 2
        a = offset or 0
        b = (size - 1) if size else 0
        self.b += u8(MAP) + u8(how) + u32(a) + u32(b) + u8(slot)

    def unmap(self, slot):
        self.b += u8(UNMAP) + u8(slot)

    def _range(self, offset, length, all_of_it=False):
        # how % 4 == 2: capped by the room only; 3: the whole mapping.
        # offset is relative to the mapping.
        if all_of_it:
            return u8(3) + u32(0) + u32(0)
        return u8(2) + u32(offset) + u32(length - 1)

    def store(self, slot, offset=0, length=0, style=0, value=0,
              all_of_it=False, stride=0):
        """style 0 random, 1 value, 2 the same bytes, 3 value + index;
        stride 0-3: every 1st, 8th, 29th, 64th byte."""
        self.b += (u8(STORE) + u8(slot) +
                   self._range(offset, length, all_of_it) +
                   u8(style | stride << 6) + u8(value))

    def load(self, slot, every_mapping=True, offset=0, length=1):
        if every_mapping:
            self.b += u8(LOAD) + u8(1) + u8(slot)
        else:
            self.b += u8(LOAD) + u8(0) + u8(slot) + self._range(offset,
                                                                length)

    def flush_invalidate(self, ranges, invalidate=False):
        """ranges: (slot, kind, atom_index, atoms) with kind 0
        VK_WHOLE_SIZE, 1 to the end of the memory, 2 atoms * atom."""
        how = (len(ranges) - 1) | (0x10 if invalidate else 0)
        self.b += u8(FLUSH_INVALIDATE) + u8(how)
        for slot, kind, index, atoms in ranges:
            self.b += u8(slot) + u8(kind) + u32(index) + u32(atoms - 1)

    def submit(self, cmds, submit2=False, timeline=False, event=False,
               observe=None, first_dst=0):
        """cmds: ('copy', dst, src, src_off, dst_off, size),
        ('copy-within', dst, lo, hi_gap, size, dst_first),
        ('fill', dst, offset, size_or_None, value),
        ('update', dst, offset, size).  observe: a path to observe at once,
        or None to leave it in flight."""
        how = (0x80 if submit2 else 0) | (0x40 if timeline else 0) | \
              (0x20 if event else 0)
        if observe is not None:
            how |= 0x18 | observe
        self.b += u8(SUBMIT) + u8(how) + u8(len(cmds) - 1) + u8(first_dst)
        for c in cmds:
            kind = c[0]
            if kind == "copy":
                _, dst, src, src_off, dst_off, size = c
                # a = size - 1 (0x40: capped by the room only); b, c are
                # the offsets modulo their room (exact when in range).
                self.b += (u8(0x40) + u32(size - 1) + u32(src_off) +
                           u32(dst_off) + u8(dst) + u8(src))
            elif kind == "copy-within":
                _, dst, lo, hi_gap, size, dst_first = c
                self.b += (u8(1 | (0x80 if dst_first else 0)) +
                           u32(size - 1) + u32(lo) + u32(hi_gap) + u8(dst))
            elif kind == "fill":
                _, dst, offset, size, value = c
                t = 2 | (0x80 if size is None else 0)
                self.b += (u8(t) + u32(offset // 4) +
                           u32((size or 4) // 4 - 1) + u32(value) + u8(dst))
            elif kind == "update":
                _, dst, offset, size = c
                t = 3 | (0x80 if size > 64 else 0)
                self.b += (u8(t) + u32(offset // 4) + u32(size // 4 - 1) +
                           u32(0) + u8(dst))
            else:
                raise ValueError(kind)

    def observe(self, path):
        self.b += u8(OBSERVE) + u8(path)


def seeds():
    out = []

    # 0: CPU → GPU → CPU on one small memory: stores, a copy within it,
    # a fill, a fence wait, loads.
    s = Seed(1)
    s.alloc(0, 4096, mapped=True)
    s.store(0, all_of_it=True)
    s.submit([("copy-within", 0, 0, 100, 1000, False),
              ("fill", 0, 2048, 512, 0x11223344)], observe=FENCE_WAIT)
    s.load(0)
    out.append(s)

    # 1-7: one seed per observation path: two memories, stores, copy
    # between them and an update, observed that way, then loads.
    for path in range(7):
        s = Seed(10 + path)
        s.alloc(0, 65536, mapped=True)
        s.alloc(1, 1048576 if path % 2 else 65540)
        s.store(0, all_of_it=True, style=0)
        s.map(1)
        s.store(1, 1000, 3000, style=3, value=path)
        s.submit([("copy", 1, 0, 0, 4096, 60000),
                  ("update", 0, 128, 256),
                  ("fill", 1, 0, None, 0xA5A5A5A5 ^ path)],
                 submit2=bool(path & 1), timeline=path in (4, 5),
                 event=path == 6)
        s.observe(path)
        s.load(0)
        s.load(1)
        out.append(s)

    # 8: disjoint bytes of the same pages: the GPU fills the first word of
    # blocks while the CPU stores the rest of each block, in flight.
    s = Seed(20)
    s.alloc(0, 65536, mapped=True)
    s.store(0, all_of_it=True, style=1, value=0)
    cmds = [("fill", 0, 4096 * k, 4, 0x01010101 * (k + 1)) for k in range(4)]
    s.submit(cmds)
    for k in range(4):
        s.store(0, 4096 * k + 4, 4092, style=3, value=k)
    s.observe(FENCE_WAIT)
    s.load(0)
    out.append(s)

    # 9: map at an offset, unmap, GPU writes while unmapped, map again
    # (at another offset), data persists.
    s = Seed(30)
    s.alloc(0, 200004)
    s.alloc(1, 4100, mapped=True)
    s.map(0, 5000, 70001)
    s.store(0, 0, 70001, style=0)
    s.unmap(0)
    s.submit([("copy", 1, 0, 5000, 0, 4100),
              ("fill", 0, 6000, 4000, 0xdeadbeef)], observe=QUEUE_IDLE)
    s.map(0, 4096, None)
    s.load(0)
    s.unmap(0)
    s.map(0, 4096 * 3, 8191, page_offset=True)
    s.load(0)
    out.append(s)

    # 10: flushes and invalidations of whole, to-the-end and atom ranges,
    # one of them while a submission is in flight.
    s = Seed(40)
    s.alloc(0, 4097, mapped=True, extra=2)
    s.alloc(1, 12300)
    s.map(1, 100, None)
    s.store(0, all_of_it=True)
    s.flush_invalidate([(0, 0, 0, 1), (1, 2, 1, 3)])
    s.submit([("copy", 1, 0, 0, 200, 4000)])
    s.flush_invalidate([(0, 1, 2, 1), (1, 0, 0, 1)], invalidate=True)
    s.store(0, 0, 100, style=1, value=7)
    s.observe(DEVICE_IDLE)
    s.flush_invalidate([(1, 2, 0, 2)], invalidate=True)
    s.load(1)
    out.append(s)

    # 11: vkFreeMemory of mapped and unmapped memory, a new allocation in
    # the slot, a read-only buffer the GPU copies from.
    s = Seed(50)
    s.alloc(0, 1000, mapped=True)
    s.alloc(1, 256, read_only=True, mapped=True)
    s.alloc(2, 1001)
    s.store(1, all_of_it=True)
    s.submit([("copy", 0, 1, 0, 0, 256)], observe=FENCE_POLL)
    s.free(0)
    s.free(2, buffer_first=True)
    s.alloc(0, 65536, mapped=True)
    s.submit([("copy", 0, 1, 10, 1000, 200)], observe=TIMELINE_WAIT,
             timeline=True, submit2=True)
    s.load(0)
    out.append(s)

    # 12: large stores and updates on odd sizes, sparse strides.
    s = Seed(60)
    s.alloc(0, 262140, mapped=True)
    s.alloc(1, 4097, mapped=True)
    s.store(0, all_of_it=True, stride=1)
    s.store(1, all_of_it=True, stride=2, style=3)
    s.submit([("update", 0, 65536, 65536), ("update", 1, 4092, 4),
              ("copy", 1, 0, 70000, 1, 4096)], observe=EVENT_POLL,
             event=True)
    s.store(0, 0, 262140, stride=3, style=2)
    s.submit([("copy-within", 0, 8, 30000, 100000, True)],
             observe=TIMELINE_POLL, timeline=True)
    s.load(0)
    s.load(1)
    out.append(s)

    # 13: a long one (libFuzzer's first length limit is the longest seed):
    # rounds of allocate, map at an offset, store, submit, store other
    # bytes and flush/invalidate while it runs, observe each way, unmap
    # or free.
    s = Seed(70)
    for k in range(7):
        a, b = k % 4, (k + 1) % 4
        s.alloc(a, SIZES[(3 * k) % len(SIZES)], mapped=k % 2 == 0,
                extra=k % 3)
        s.alloc(b, SIZES[(5 * k + 4) % len(SIZES)])
        s.map(b, 64 * k, None)
        s.store(b, all_of_it=True, style=k % 4)
        s.submit([("fill", a, 0, 4, k), ("copy", a, b, 0, 8, 1),
                  ("update", b, 0, 4)],
                 submit2=k % 2 == 1, timeline=k % 3 == 0, event=k == 6)
        s.store(b, 4, 60, style=3, value=k)
        s.flush_invalidate([(b, 2, 0, 1)], invalidate=k % 2 == 0)
        s.load(b)
        s.observe(k)
        s.load(a)
        s.unmap(b)
        if k % 2:
            s.free(a, buffer_first=k % 4 == 1)
    out.append(s)
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        here, "corpus", "vulkan")
    os.makedirs(outdir, exist_ok=True)
    for i, s in enumerate(seeds()):
        with open(os.path.join(outdir, "seed-%02d" % i), "wb") as f:
            f.write(s.b)


if __name__ == "__main__":
    main()
