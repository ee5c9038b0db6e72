#!/usr/bin/python3
"""A writer that records when each write was acknowledged, for the fencing tests.

Usage: stamped-writer.py <nbd uri> <first byte offset> <slots> <slot size>
Writes slot after slot, round robin, one request in flight, each slot with the pattern of
(slot, seq), and prints one line per outcome with the wall clock in ms:
  ack <slot> <seq> <ms>       acknowledged
  err <slot> <seq> <ms> <e>   failed
It stops when its stdin closes, printing "done".
"""
import sys
import threading
import time

import nbd

uri, base, slots, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
stop = threading.Event()


def pattern(slot, seq):
    head = slot.to_bytes(4, "little") + seq.to_bytes(4, "little")
    return (head * (size // 8 + 1))[:size]


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def worker():
    h = nbd.NBD()
    h.connect_uri(uri)
    seq = 0
    while not stop.is_set():
        slot = seq % slots
        seq += 1
        try:
            h.pwrite(pattern(slot, seq), base + slot * size, nbd.CMD_FLAG_FUA)
            out(f"ack {slot} {seq} {int(time.time() * 1000)}")
        except Exception as e:  # noqa: BLE001
            out(f"err {slot} {seq} {int(time.time() * 1000)} {str(e).replace(chr(10), ' ')}")
            time.sleep(0.05)
    try:
        h.shutdown()
    except Exception:  # noqa: BLE001
        pass


t = threading.Thread(target=worker)
t.start()
sys.stdin.read()
stop.set()
t.join()
out("done")
