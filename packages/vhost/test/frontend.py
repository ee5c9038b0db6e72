#!/usr/bin/env python3
"""A vhost-user-blk front-end for the tests of @archipelago/vhost (src/vhost.test.ts): it plays
qemu's part over the unix socket -- guest memory in a memfd passed with SCM_RIGHTS, eventfds for
kick and call, split virtqueues laid out by hand -- so that it can also send what qemu never would:
descriptors outside guest memory, loops in a chain, heads out of range, oversized requests,
random descriptor tables.

    frontend.py SOCKET SCENARIO [ARG]   prints one JSON object of observations on stdout

Facts from qemu's docs/interop/vhost-user.rst and the virtio 1.1 spec (split virtqueues 2.6,
block device 5.2). Standard library only (Python >= 3.10: os.eventfd, socket.send_fds).
"""
import hashlib
import json
import mmap
import os
import random
import socket
import struct
import sys
import time

GET_FEATURES, SET_FEATURES, SET_OWNER, SET_MEM_TABLE = 1, 2, 3, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL = 12, 13
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_VRING_ENABLE = 15, 16, 17, 18
GET_CONFIG = 24
PF_MQ, PF_REPLY_ACK, PF_CONFIG = 1 << 0, 1 << 3, 1 << 9
NEXT, WRITE, INDIRECT = 1, 2, 4
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES = 0, 1, 4, 8, 11, 13

MEM = 4 << 20
GPA = 0x40000000          # guest physical address of the memfd's start
UVA = 0x7F0000000000      # the front-end's "user address" of it (what SET_VRING_ADDR carries)
QSIZE = 16
DATA = 0x100000           # data buffers from here on


class Frontend:
    def __init__(self, path, queues=1):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        for _ in range(100):
            try:
                self.s.connect(path)
                break
            except OSError:
                time.sleep(0.05)
        self.fd = os.memfd_create("guest")
        os.ftruncate(self.fd, MEM)
        self.mem = mmap.mmap(self.fd, MEM)
        self.queues = queues
        self.kick = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(queues)]
        self.call = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(queues)]
        self.avail_idx = [0] * queues
        self.used_seen = [0] * queues

    # --- messages --------------------------------------------------------------------------
    def send(self, req, payload=b"", fds=(), need_reply=False):
        flags = 1 | (8 if need_reply else 0)
        data = struct.pack("<III", req, flags, len(payload)) + payload
        if fds:
            socket.send_fds(self.s, [data], list(fds))
        else:
            self.s.sendall(data)

    def recv(self):
        hdr = self.s.recv(12, socket.MSG_WAITALL)
        if len(hdr) < 12:
            raise EOFError("back-end closed the connection")
        req, flags, size = struct.unpack("<III", hdr)
        payload = self.s.recv(size, socket.MSG_WAITALL) if size else b""
        assert flags & 4, "reply flag"
        return req, payload

    def get_u64(self, req):
        self.send(req)
        return struct.unpack("<Q", self.recv()[1])[0]

    def setup(self):
        o = {}
        o["features"] = self.get_u64(GET_FEATURES)
        o["protocolFeatures"] = self.get_u64(GET_PROTOCOL_FEATURES)
        self.send(SET_PROTOCOL_FEATURES, struct.pack("<Q", PF_MQ | PF_REPLY_ACK | PF_CONFIG))
        o["queueNum"] = self.get_u64(GET_QUEUE_NUM)
        self.send(SET_OWNER)
        self.send(GET_CONFIG, struct.pack("<III", 0, 60, 0) + bytes(60))
        cfg = self.recv()[1][12:]
        o["capacity"] = struct.unpack_from("<Q", cfg, 0)[0]
        o["blkSize"] = struct.unpack_from("<I", cfg, 20)[0]
        o["numQueues"] = struct.unpack_from("<H", cfg, 34)[0]
        o["discardAlignment"] = struct.unpack_from("<I", cfg, 44)[0]
        self.send(SET_FEATURES, struct.pack("<Q", o["features"]))
        region = struct.pack("<QQQQ", GPA, MEM, UVA, 0)
        self.send(SET_MEM_TABLE, struct.pack("<II", 1, 0) + region, [self.fd], need_reply=True)
        o["memTableAck"] = struct.unpack("<Q", self.recv()[1])[0]
        for q in range(self.queues):
            self.start_ring(q)
        return o

    def ring(self, q):
        base = 0x10000 * q
        return base, base + 0x1000, base + 0x2000  # desc, avail, used

    def start_ring(self, q):
        desc, avail, used = self.ring(q)
        self.send(SET_VRING_NUM, struct.pack("<II", q, QSIZE))
        self.send(SET_VRING_BASE, struct.pack("<II", q, self.avail_idx[q]))
        self.send(SET_VRING_ADDR, struct.pack("<IIQQQQ", q, 0, UVA + desc, UVA + used, UVA + avail, 0))
        self.send(SET_VRING_KICK, struct.pack("<Q", q), [self.kick[q]])
        self.send(SET_VRING_CALL, struct.pack("<Q", q), [self.call[q]])
        self.send(SET_VRING_ENABLE, struct.pack("<II", q, 1))

    # --- the guest's side of the rings -----------------------------------------------------
    def put_desc(self, q, i, addr, length, flags, nxt=0, table=None):
        off = (table if table is not None else self.ring(q)[0]) + 16 * i
        struct.pack_into("<QIHH", self.mem, off, addr, length, flags, nxt)

    def submit(self, q, heads):
        _, avail, _ = self.ring(q)
        for h in heads:
            struct.pack_into("<H", self.mem, avail + 4 + 2 * (self.avail_idx[q] % QSIZE), h)
            self.avail_idx[q] = (self.avail_idx[q] + 1) & 0xFFFF
        struct.pack_into("<H", self.mem, avail + 2, self.avail_idx[q])
        os.eventfd_write(self.kick[q], 1)

    def wait_used(self, q, n, timeout=5.0):
        """The next n used entries of queue q: [(id, len)]."""
        _, _, used = self.ring(q)
        deadline = time.time() + timeout
        while True:
            idx = struct.unpack_from("<H", self.mem, used + 2)[0]
            if (idx - self.used_seen[q]) & 0xFFFF >= n:
                break
            if time.time() > deadline:
                raise TimeoutError(f"queue {q}: {n} used entries expected, used idx {idx}")
            time.sleep(0.002)
        out = []
        for _ in range(n):
            e = used + 4 + 8 * (self.used_seen[q] % QSIZE)
            out.append(struct.unpack_from("<II", self.mem, e))
            self.used_seen[q] = (self.used_seen[q] + 1) & 0xFFFF
        return out

    def called(self, q):
        try:
            return os.eventfd_read(self.call[q]) > 0
        except BlockingIOError:
            return False

    def request(self, q, rtype, sector, data=b"", read_len=0, split=1, bad=None, gap=0):
        """One virtio-blk request as a 3+ descriptor chain at descriptors 0..; returns
        (status, used_len, bytes read). The data is in `split` pieces, `gap` bytes apart in guest
        memory (0: adjacent). `bad` corrupts it on purpose."""
        hdr_at, status_at, buf_at = DATA + 0x1000 * q, DATA + 0x1000 * q + 0x100, DATA + 0x10000 + 0x100000 * q
        struct.pack_into("<IIQ", self.mem, hdr_at, rtype, 0, sector)
        self.mem[status_at] = 0xFF
        chain = [(GPA + hdr_at, 16, 0)]
        length = len(data) if data else read_len
        pieces = []
        if length:
            part = length // split
            for k in range(split):
                n = part if k < split - 1 else length - part * (split - 1)
                pieces.append((buf_at + (part + gap) * k, part * k, n))
        for at, src, n in pieces:
            if data:
                self.mem[at : at + n] = data[src : src + n]
            chain.append((GPA + at, n, WRITE if read_len else 0))
        chain.append((GPA + status_at, 1, WRITE))
        if bad == "outside":
            chain[1] = (GPA + MEM + 0x1000, chain[1][1], chain[1][2])
        if bad == "huge":
            chain[1] = (GPA + buf_at, 64 << 20, chain[1][2])
        for i, (a, n, f) in enumerate(chain):
            last = i == len(chain) - 1
            self.put_desc(q, i, a, n, f | (0 if last else NEXT), i + 1)
        if bad == "loop":
            self.put_desc(q, len(chain) - 1, GPA + status_at, 1, WRITE | NEXT, 0)
        if bad == "next-out-of-range":
            a, n, f = chain[-2]
            self.put_desc(q, len(chain) - 2, a, n, f | NEXT, QSIZE + 5)
        self.submit(q, [QSIZE + 3 if bad == "head" else 0])
        (uid, ulen), = self.wait_used(q, 1)
        got = b"".join(bytes(self.mem[at : at + n]) for at, _, n in pieces) if read_len else b""
        return self.mem[status_at], ulen, got, uid

    def indirect_request(self, q, rtype, sector, read_len):
        """An IN request through an indirect descriptor table."""
        hdr_at, status_at, buf_at, table = DATA + 0x800, DATA + 0x900, DATA + 0x20000, self.ring(q)[0] + 0x4000
        struct.pack_into("<IIQ", self.mem, hdr_at, rtype, 0, sector)
        self.mem[status_at] = 0xFF
        self.put_desc(q, 0, GPA + hdr_at, 16, NEXT, 1, table=table)
        self.put_desc(q, 1, GPA + buf_at, read_len, WRITE | NEXT, 2, table=table)
        self.put_desc(q, 2, GPA + status_at, 1, WRITE, 0, table=table)
        self.put_desc(q, 0, GPA + table, 48, INDIRECT)
        self.submit(q, [0])
        (uid, ulen), = self.wait_used(q, 1)
        return self.mem[status_at], ulen, bytes(self.mem[buf_at : buf_at + read_len])

    def close(self):
        self.s.close()


def pattern(n, seed):
    r = random.Random(seed)
    return bytes(r.getrandbits(8) for _ in range(n))


def scenario_basic(path, _arg):
    fe = Frontend(path, queues=2)
    o = fe.setup()
    data = pattern(8192, 1)
    o["write"] = fe.request(0, T_OUT, 8, data=data, split=2)[:2]
    st, ulen, got, _ = fe.request(0, T_IN, 8, read_len=8192, split=3)
    o["read"] = [st, ulen, got == data]
    # scattered pieces (4 KiB apart in guest memory), written and read back the same way
    data3 = pattern(16384, 5)
    o["scatterWrite"] = fe.request(0, T_OUT, 200, data=data3, split=4, gap=4096)[0]
    st, ulen, got, _ = fe.request(0, T_IN, 200, read_len=16384, split=4, gap=4096)
    o["scatterRead"] = [st, ulen, got == data3]
    o["scatterSha"] = hashlib.sha256(data3).hexdigest()
    o["called"] = fe.called(0)
    st, ulen, got, _ = fe.request(0, T_GET_ID, 0, read_len=20)
    o["id"] = [st, got.rstrip(b"\0").decode()]
    o["flush"] = fe.request(0, T_FLUSH, 0)[0]
    # queue 1: a write there, read back on queue 0
    data2 = pattern(4096, 2)
    o["q1write"] = fe.request(1, T_OUT, 100, data=data2)[0]
    o["q1read"] = fe.request(0, T_IN, 100, read_len=4096)[2] == data2
    # write zeroes (unmap allowed) over the first write, and a discard
    seg = struct.pack("<QII", 8, 8, 1)
    o["writeZeroes"] = fe.request(0, T_WRITE_ZEROES, 0, data=seg)[0]
    o["zeroed"] = fe.request(0, T_IN, 8, read_len=4096)[2] == bytes(4096)
    o["discard"] = fe.request(0, T_DISCARD, 0, data=struct.pack("<QII", 100, 8, 0))[0]
    o["indirect"] = list(fe.indirect_request(0, T_IN, 16, 4096)[:2])
    o["unsupported"] = fe.request(0, 99, 0)[0]
    o["beyondEnd"] = fe.request(0, T_IN, o["capacity"] - 4, read_len=4096)[0]
    o["partialSector"] = fe.request(0, T_IN, 0, read_len=100)[0]
    print(json.dumps(o))


def scenario_garbage(path, arg):
    fe = Frontend(path)
    fe.setup()
    o = {}
    # status byte reachable: IOERR written; not reachable (loop, bad index): no write, used len 0
    for bad in ("outside", "huge"):
        st, ulen, _, _ = fe.request(0, T_OUT, 0, data=bytes(4096), bad=bad)
        o[bad] = [st, ulen]
    for bad in ("loop", "next-out-of-range", "head"):
        st, ulen, _, uid = fe.request(0, T_IN, 0, read_len=4096, bad=bad)
        o[bad] = [st, ulen, uid]
    # random descriptor tables: every entry put on the avail ring comes back on the used ring
    r = random.Random(int(arg or 7))
    rounds = 0
    for _ in range(60):
        for i in range(QSIZE):
            addr = r.choice([GPA + DATA + r.randrange(0, 0x200000), r.getrandbits(64), GPA + MEM - 8, 0])
            length = r.choice([0, 1, 16, 512, 4096, r.getrandbits(32)])
            flags = r.getrandbits(3)
            struct.pack_into("<QIHH", fe.mem, fe.ring(0)[0] + 16 * i, addr, length, flags, r.randrange(0, QSIZE + 2))
            # a plausible header where the descriptors may point
        for k in range(0, 0x200000, 0x1000):
            struct.pack_into("<IIQ", fe.mem, DATA + k, r.choice([0, 1, 4, 8, 11, 13, 77]), 0, r.randrange(0, 1 << 20))
        heads = [r.randrange(0, QSIZE + 1) for _ in range(r.randrange(1, 8))]
        fe.submit(0, heads)
        fe.wait_used(0, len(heads))
        rounds += 1
    o["randomRounds"] = rounds
    # and a good request still works afterwards
    data = pattern(4096, 3)
    o["afterWrite"] = fe.request(0, T_OUT, 0, data=data)[0]
    o["afterRead"] = fe.request(0, T_IN, 0, read_len=4096)[2] == data
    print(json.dumps(o))


def scenario_readonly(path, _arg):
    fe = Frontend(path)
    o = fe.setup()
    o["write"] = fe.request(0, T_OUT, 0, data=bytes(512))[0]
    o["writeZeroes"] = fe.request(0, T_WRITE_ZEROES, 0, data=struct.pack("<QII", 0, 8, 0))[0]
    o["discard"] = fe.request(0, T_DISCARD, 0, data=struct.pack("<QII", 0, 8, 0))[0]
    o["read"] = fe.request(0, T_IN, 0, read_len=512)[0]
    print(json.dumps(o))


def scenario_reconnect(path, _arg):
    fe = Frontend(path)
    fe.setup()
    data = pattern(4096, 4)
    a = fe.request(0, T_OUT, 40, data=data)[0]
    fe.close()
    fe = Frontend(path)
    fe.setup()
    st, _, got, _ = fe.request(0, T_IN, 40, read_len=4096)
    # stopping a ring answers with the next avail index
    fe.send(GET_VRING_BASE, struct.pack("<II", 0, 0))
    base = struct.unpack("<II", fe.recv()[1])
    print(json.dumps({"write": a, "read": st, "same": got == data, "vringBase": list(base)}))


if __name__ == "__main__":
    sock, name = sys.argv[1], sys.argv[2]
    globals()[f"scenario_{name}"](sock, sys.argv[3] if len(sys.argv) > 3 else None)
