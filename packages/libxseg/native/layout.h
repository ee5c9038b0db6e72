// Byte layout of the XSEG shared-memory segment (ours, not the original's; see README.md).
//
// Everything in the segment is addressed by offsets (never pointers), and every offset or index
// read back from shared memory is checked against the segment's geometry before use: another
// process may have died half-way through a write, or the bytes may have been scribbled on.
#pragma once
#include <pthread.h>
#include <stdint.h>

namespace xseg {

constexpr char MAGIC[8] = {'A', 'R', 'C', 'H', 'X', 'S', 'E', 'G'};
constexpr uint32_t VERSION = 2;  // 2: doorbell wake-ups (`waiters` means "owner armed")
constexpr uint32_t NONE = 0xffffffffu;      // "no request" in a list link
constexpr uint64_t NONE64 = ~0ull;          // "no chunk" in the heap free list / no data
constexpr uint32_t REQ_MAGIC = 0x58524551;  // 'XREQ'
constexpr uint64_t CHUNK_MAGIC = 0x4b4e554843475358ull;  // 'XSGCHUNK'
constexpr uint32_t MAX_TARGET = 256;
constexpr uint64_t CHUNK_ALIGN = 64;
constexpr uint64_t CHUNK_HDR = 64;   // header before the payload (keeps payloads 64-aligned)
constexpr uint64_t CHUNK_FTR = 8;    // boundary tag at the end of every chunk
constexpr uint64_t MIN_CHUNK = 128;
constexpr uint32_t FQ_MAX = 64;      // per-port cache of free requests

// A robust, process-shared mutex plus the pid of its holder (for report and recoverlocks).
struct Lock {
  pthread_mutex_t m;
  uint32_t owner_pid;  // 0 = free; written by the holder right after locking
  uint32_t pad;
};

// Intrusive list of requests, linked through Req::next. FIFO for request/reply queues,
// LIFO for free lists. `count` is read without the lock by waiters (atomic loads).
struct List {
  uint32_t head, tail, count, pad;
};

enum Loc : uint32_t {
  LOC_POOL = 1,      // global free pool
  LOC_FQ = 2,        // a port's free queue
  LOC_HELD = 3,      // owned by the submitter (being prepared, or a received reply)
  LOC_RQ = 4,        // in the destination's request queue
  LOC_ACCEPTED = 5,  // accepted by loc_port, being served
  LOC_PQ = 6,        // in the source's reply queue
};

enum PortFlags : uint32_t { PF_BOUND = 1, PF_DYNAMIC = 2 };

struct Port {
  Lock lock;              // guards the three lists and the fields below
  uint32_t seq;           // bumped after every enqueue to rq or pq (what spinners and re-checks read)
  uint32_t waiters;       // non-zero while the owner may sleep: enqueuers then ring its doorbell
  uint32_t owner_pid;     // pid of the binder (0 = never bound / left)
  uint32_t flags;
  uint32_t portno;
  uint32_t alloc_reqs;    // requests this port has taken from the pool and not put back
  uint64_t binds;         // how many times the port was bound (a restarted peer rebinds)
  List rq, pq, fq;
  uint8_t pad[8];
};

struct Req {
  uint32_t magic, gen;    // gen changes on every put, so stale JS handles are refused
  uint32_t loc, loc_port;
  uint32_t next;
  uint32_t op, flags, state;
  uint32_t src, dst, transit, targetlen;
  uint32_t accepter_pid, pad;
  uint64_t offset, size, serviced;
  uint64_t data_off;      // payload offset from the heap base, NONE64 = no chunk
  uint64_t datalen;       // meaningful bytes in the payload
  uint64_t data_cap;      // payload capacity
  uint64_t pad2;
  char target[MAX_TARGET];
};

struct Header {
  char magic[8];
  uint32_t version, header_size;
  uint64_t segment_size;
  uint32_t page_shift, nr_ports, dynports, nr_reqs;
  uint64_t heap_size;
  uint64_t ports_off, reqs_off, heap_off;
  uint32_t port_size, req_size;
  uint32_t creator_pid, pad;
  char name[256];
  Lock seg_lock;          // guards port binding and the global request pool
  Lock heap_lock;         // guards the heap
  List pool;
  uint64_t heap_free_head;  // first free chunk (offset from heap base)
  uint64_t heap_used;       // bytes in used chunks (headers included)
  uint64_t heap_chunks_used;
};

// Chunk header in the heap (boundary tags: the size is repeated in the last 8 bytes).
struct Chunk {
  uint64_t size_used;  // size | 1 when in use
  uint64_t magic;
  uint64_t next_free, prev_free;
  uint64_t owner_req;  // request index holding it (diagnostics)
  uint64_t pad[3];
};

static_assert(sizeof(Chunk) == CHUNK_HDR, "chunk header size");
static_assert(sizeof(Req) % 8 == 0, "req alignment");
static_assert(sizeof(Port) % 8 == 0, "port alignment");

}  // namespace xseg
