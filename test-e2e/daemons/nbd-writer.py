#!/usr/bin/python3
"""A writer that records what was acknowledged, for the daemon crash test.

Usage: nbd-writer.py <unix socket> <export> <slots> <slot size>
Writes slot after slot (random order) with a pattern of (slot, seq), sequentially (one request in
flight at a time per connection, CONNS connections in threads), and prints one line per outcome:
  ack <slot> <seq>      the write was acknowledged (then flushed every 16 writes)
  err <slot> <seq> <e>  the write failed (the slot's content is unknown from then on)
It stops when its stdin closes, printing "done".
"""
import random
import sys
import threading

import nbd

sock, export, slots, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
CONNS = 4
lock = threading.Lock()
stop = threading.Event()


def pattern(slot, seq):
    head = slot.to_bytes(4, "little") + seq.to_bytes(4, "little")
    return (head * (size // 8 + 1))[:size]


def out(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def worker(w):
    h = nbd.NBD()
    h.set_export_name(export)
    h.connect_unix(sock)
    seq = 0
    mine = [s for s in range(slots) if s % CONNS == w]
    while not stop.is_set():
        slot = random.choice(mine)
        seq += 1
        try:
            h.pwrite(pattern(slot, seq), slot * size)
            if seq % 16 == 0:
                h.flush()
            out(f"ack {slot} {seq}")
        except Exception as e:  # noqa: BLE001
            out(f"err {slot} {seq} {str(e).replace(chr(10), ' ')}")
    h.shutdown()


threads = [threading.Thread(target=worker, args=(w,)) for w in range(CONNS)]
for t in threads:
    t.start()
sys.stdin.read()
stop.set()
for t in threads:
    t.join()
out("done")
