// The segment core: mapping, locks, lists, heap, requests. No Node-API here, so the logic reads
// on its own; segment_wrap.cc wraps it for JavaScript and waiter.cc waits on its ports. Errors
// are thrown as xseg::Error{code, message}.
#pragma once
#include <atomic>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "layout.h"

namespace xseg {

struct Error {
  std::string code;     // an ArchipelagoError code: EINVAL, EIO, EBUSY, ENOSPC, ...
  std::string message;
  bool corrupt = false; // true when the segment's bytes failed a check
};

[[noreturn]] void fail(const char* code, const std::string& msg);
[[noreturn]] void corrupt(const std::string& msg);

// One mmap of a segment. Shared (std::shared_ptr) by the Segment object and by every external
// Buffer handed to JS, so the memory stays mapped while any Buffer still points into it.
struct Mapping {
  uint8_t* base = nullptr;
  uint64_t size = 0;
  // The name it was created or joined by (checked: no '/'), never the copy in the header, which
  // a scribbled segment could point anywhere: doorbell paths are built from this one.
  std::string name;
  ~Mapping();
};

struct Geometry {
  uint32_t nr_ports, dynports, nr_reqs, page_shift;
  uint64_t heap_size;
};

struct Recovered {
  uint32_t failed = 0;  // accepted requests failed back to their senders
  uint32_t freed = 0;   // stale replies / held requests returned to the pool
};

class Seg {
 public:
  static std::shared_ptr<Mapping> create(const std::string& name, const Geometry& g);
  // Gives the segment and its doorbells to uid:gid (-1: unchanged), user and group read-write.
  static void share(const std::string& name, int64_t uid, int64_t gid);
  static std::shared_ptr<Mapping> join(const std::string& name);
  static void destroy(const std::string& name);

  explicit Seg(std::shared_ptr<Mapping> m);
  ~Seg();
  Seg(const Seg&) = delete;
  Seg& operator=(const Seg&) = delete;

  Header* hdr() const { return reinterpret_cast<Header*>(map_->base); }
  const std::shared_ptr<Mapping>& mapping() const { return map_; }
  Port* port(uint32_t n) const;  // bounds-checked
  Req* req(uint32_t i) const;    // bounds-checked (index and magic)
  uint8_t* heap() const { return map_->base + hdr()->heap_off; }
  uint8_t* payload(Req* r, uint64_t* len) const;  // checked view of the request's data

  // Locks: return true when the previous holder died and the lock was recovered.
  bool lock(Lock* l);
  void unlock(Lock* l);

  // Ports
  void bind(uint32_t n, bool dynamic, Recovered* rec);
  uint32_t bind_dynamic(Recovered* rec);
  void leave(uint32_t n);
  // Wake-ups. After every enqueue, `signal` bumps the port's `seq`; when the port's owner is
  // armed (`waiters` != 0: it may be asleep in its event loop) it also writes one byte to the
  // port's doorbell, a FIFO under /dev/shm/<name>.bell/ that the owner's libuv loop watches.
  void signal(Port* p);
  // The serving side: creates (if needed) and opens port n's doorbell for reading, non-blocking.
  int open_doorbell(uint32_t n);
  static std::string doorbell_dir(const std::string& name);
  static std::string doorbell_path(const std::string& name, uint32_t n);
  Recovered recover_port(uint32_t n, bool force);
  uint32_t recover_locks(uint32_t pid);

  // Requests
  uint32_t get_request(uint32_t src);
  void put_request(uint32_t src, uint32_t idx);
  void prep(uint32_t idx, uint64_t datalen);
  void submit(uint32_t idx);
  // Pops the next request (accept) or reply (receive); NONE when empty. Corrupt entries are
  // failed back or dropped and reported through `errors`.
  uint32_t accept(uint32_t port, std::vector<Error>* errors);
  uint32_t receive(uint32_t port, std::vector<Error>* errors);
  void respond(uint32_t port, uint32_t idx);
  bool has_work(uint32_t port) const;

  // Heap
  uint64_t alloc(uint64_t n, uint32_t owner);  // payload offset from heap base
  void free_chunk(uint64_t payload_off);
  struct HeapStats { uint64_t used, free, free_chunks, largest_free, used_chunks; };
  HeapStats heap_stats();

  static bool pid_alive(uint32_t pid);

 private:
  void check_geometry() const;
  // lists (caller holds the lock guarding the list)
  void list_push_tail(List* l, uint32_t idx, uint32_t loc, uint32_t loc_port);
  void list_push_head(List* l, uint32_t idx, uint32_t loc, uint32_t loc_port);
  uint32_t list_pop(List* l, uint32_t loc, uint32_t loc_port);
  void list_repair(List* l, uint32_t loc, uint32_t loc_port);
  void list_reset_for(uint32_t idx_loc, uint32_t port);
  bool lock_port(Port* p, uint32_t n);  // takes the lock; a dead holder's queues get repaired
  void repair_queues(Port* p, uint32_t n);
  void claim(Port* p, uint32_t flags);
  void enqueue(uint32_t n, List Port::*q, uint32_t loc, uint32_t idx);
  uint32_t dequeue(uint32_t n, List Port::*q, uint32_t loc, uint32_t to, std::vector<Error>* errors);
  void heap_rebuild();
  Chunk* chunk_at(uint64_t off, bool want_used) const;
  void free_list_remove(Chunk* c, uint64_t off);
  void free_list_push(Chunk* c, uint64_t off);
  void fail_back(Req* r, uint32_t idx, std::vector<Error>* errors);
  void pool_put(uint32_t idx);
  void drop_data(Req* r);      // frees the data chunk (if it still checks out) and forgets it
  void reclaim(uint32_t idx);  // drop_data, a new generation, back to the pool

  void ring(uint32_t n);

  std::shared_ptr<Mapping> map_;
  std::unordered_map<uint32_t, int> bells_;  // write ends of other ports' doorbells, opened lazily
};

}  // namespace xseg
