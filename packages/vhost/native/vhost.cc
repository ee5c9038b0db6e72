// vhost-user-blk back-end: the vhost-user protocol on a unix socket (file descriptors passed with
// SCM_RIGHTS, which Node cannot receive) and the split virtqueues of a virtio-blk device, all on
// the Node event loop (uv_poll on the sockets and the kick eventfds: no threads, no locks).
//
// Requests are parsed and checked here (every guest address translated through the memory table
// and bounds-checked, chains bounded, directions checked) and handed to JavaScript as Buffers that
// view guest memory directly: the composer reads into them (IN) or writes from them (OUT), so guest
// data is copied once, between guest memory and the blocker. GET_ID and the malformed requests are
// answered here. JavaScript answers with complete(tag, status).
//
// Facts from qemu's docs/interop/vhost-user.rst and the virtio 1.1 spec (2.6 split virtqueues,
// 5.2 block device). Everything is in the host's byte order (x86-64, little endian, as virtio 1.0).
#include <napi.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

// --- protocol constants ---------------------------------------------------------------------
enum : uint32_t {
  GET_FEATURES = 1, SET_FEATURES = 2, SET_OWNER = 3, RESET_OWNER = 4, SET_MEM_TABLE = 5,
  SET_LOG_BASE = 6, SET_LOG_FD = 7, SET_VRING_NUM = 8, SET_VRING_ADDR = 9, SET_VRING_BASE = 10,
  GET_VRING_BASE = 11, SET_VRING_KICK = 12, SET_VRING_CALL = 13, SET_VRING_ERR = 14,
  GET_PROTOCOL_FEATURES = 15, SET_PROTOCOL_FEATURES = 16, GET_QUEUE_NUM = 17,
  SET_VRING_ENABLE = 18, GET_CONFIG = 24, SET_CONFIG = 25, RESET_DEVICE = 34,
};
constexpr uint32_t FLAG_VERSION = 0x1, FLAG_REPLY = 0x4, FLAG_NEED_REPLY = 0x8;
constexpr uint64_t F_PROTOCOL_FEATURES = 1ull << 30;
constexpr uint64_t PF_MQ = 1ull << 0, PF_REPLY_ACK = 1ull << 3, PF_CONFIG = 1ull << 9;
constexpr uint64_t PROTOCOL_FEATURES = PF_MQ | PF_REPLY_ACK | PF_CONFIG;
constexpr uint64_t VIRTIO_F_VERSION_1 = 1ull << 32, RING_F_INDIRECT_DESC = 1ull << 28,
                   RING_F_EVENT_IDX = 1ull << 29;
constexpr uint64_t BLK_F_SEG_MAX = 1ull << 2, BLK_F_RO = 1ull << 5, BLK_F_BLK_SIZE = 1ull << 6,
                   BLK_F_FLUSH = 1ull << 9, BLK_F_MQ = 1ull << 12, BLK_F_DISCARD = 1ull << 13,
                   BLK_F_WRITE_ZEROES = 1ull << 14;
constexpr uint16_t DESC_F_NEXT = 1, DESC_F_WRITE = 2, DESC_F_INDIRECT = 4;
constexpr uint16_t AVAIL_F_NO_INTERRUPT = 1;
constexpr uint32_t T_IN = 0, T_OUT = 1, T_FLUSH = 4, T_GET_ID = 8, T_DISCARD = 11, T_WRITE_ZEROES = 13;
constexpr uint8_t S_OK = 0, S_IOERR = 1, S_UNSUPP = 2;
constexpr size_t MAX_PAYLOAD = 4096;   // the largest message (memory table: 8 + 8 * 32 bytes; config: 12 + 256)
constexpr int MAX_FDS = 32;
constexpr uint32_t MAX_QUEUES = 64;
constexpr uint32_t MAX_RING = 32768;
constexpr uint32_t CONFIG_SIZE = 60;   // struct virtio_blk_config up to write_zeroes_may_unmap + padding
constexpr uint32_t MAX_SEGMENTS = 1024; // per request, indirect tables included

struct Region {
  uint64_t gpa, size, uva;
  uint8_t* host;      // host address of gpa
  void* map;          // mmap base
  size_t mapLen;
};

// A memory table; requests in flight keep theirs alive (a new SET_MEM_TABLE or a disconnect must
// not unmap memory JavaScript still reads or writes).
struct MemTable {
  std::vector<Region> regions;
  ~MemTable() {
    for (auto& r : regions) munmap(r.map, r.mapLen);
  }
  // Host address of [gpa, gpa + len) when it lies in one region.
  uint8_t* gpa(uint64_t a, uint64_t len) const {
    for (auto& r : regions)
      if (a >= r.gpa && a - r.gpa <= r.size && len <= r.size - (a - r.gpa)) return r.host + (a - r.gpa);
    return nullptr;
  }
  // The contiguous run of [a, a + len) that starts at a (possibly shorter than len: the caller loops).
  uint8_t* gpaRun(uint64_t a, uint64_t len, uint64_t* run) const {
    for (auto& r : regions)
      if (a >= r.gpa && a - r.gpa < r.size) {
        uint64_t left = r.size - (a - r.gpa);
        *run = len < left ? len : left;
        return r.host + (a - r.gpa);
      }
    return nullptr;
  }
  uint8_t* uva(uint64_t a, uint64_t len) const {
    for (auto& r : regions)
      if (a >= r.uva && a - r.uva <= r.size && len <= r.size - (a - r.uva)) return r.host + (a - r.uva);
    return nullptr;
  }
};

struct Desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags, next;
};
static_assert(sizeof(Desc) == 16, "virtq_desc");

struct Iov {
  uint8_t* p;
  uint64_t len;
};

class Device;

struct Pending {          // a request handed to JavaScript
  std::shared_ptr<MemTable> mem;
  uint8_t* status;
  uint32_t inLen;         // bytes the device writes on success (data + status)
  uint32_t head;
  uint32_t queue;
};

struct Vring {
  Device* dev = nullptr;
  uint32_t index = 0;
  uint32_t num = 0;
  uint64_t descUva = 0, availUva = 0, usedUva = 0;
  Desc* desc = nullptr;
  uint16_t* avail = nullptr;  // flags, idx, ring[num], used_event
  uint8_t* used = nullptr;    // flags, idx, {id,len}[num], avail_event
  uint16_t lastAvail = 0;
  uint16_t usedIdx = 0;
  uint16_t signalledUsed = 0;  // used idx at the last notification (EVENT_IDX)
  bool signalledValid = false;
  int kickFd = -1, callFd = -1;
  uv_poll_t* kickPoll = nullptr;
  bool enabled = false;
  bool started = false;
  bool notifyPending = false;
  uint32_t inflight = 0;
  bool baseReplyPending = false;
};

class Device : public Napi::ObjectWrap<Device> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports);
  explicit Device(const Napi::CallbackInfo& info);
  ~Device() override { shutdown(); }

 private:
  Napi::Value Listen(const Napi::CallbackInfo& info);
  Napi::Value Complete(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);

  void shutdown();
  void onAccept();
  void onMessage();
  void disconnect(const char* why);
  bool handle(uint32_t req, uint32_t flags, uint8_t* p, uint32_t size, std::vector<int>& fds);
  bool reply(uint32_t req, const void* payload, uint32_t size);
  bool replyU64(uint32_t req, uint64_t v) { return reply(req, &v, 8); }
  void mapRings();
  void resetRing(Vring& vq);
  void setKick(Vring& vq, int fd);
  void onKick(Vring& vq);
  void processRing(Vring& vq);
  void handleRequest(Vring& vq, uint32_t head);
  void pushUsed(Vring& vq, uint32_t head, uint32_t len);
  void notify(Vring& vq);
  void flushNotifies();
  void finishInflight(Vring& vq);
  void log(const std::string& s);

  Napi::FunctionReference onRequest_;
  Napi::FunctionReference onLog_;
  std::string path_;
  uint64_t capacity_ = 0;  // 512-byte sectors
  uint32_t blkSize_ = 512;
  uint32_t discardAlign_ = 8;
  bool readonly_ = false;
  uint32_t queues_ = 1;
  std::string serial_;
  uint32_t maxBytes_ = 32u << 20;

  int listenFd_ = -1, connFd_ = -1;
  uv_poll_t* listenPoll_ = nullptr;
  uv_poll_t* connPoll_ = nullptr;
  uv_check_t* check_ = nullptr;
  uint64_t features_ = 0, protocolFeatures_ = 0;
  std::shared_ptr<MemTable> mem_;
  std::vector<Vring> rings_;
  uint32_t generation_ = 1;
  std::unordered_map<uint64_t, Pending> pending_;
  uint64_t nextTag_ = 1;
  // counters for stats()
  uint64_t requests_ = 0, badRequests_ = 0, connections_ = 0;
  uint64_t kicks_ = 0, notifies_ = 0;  // kick eventfd wake-ups, call eventfd writes
};

void closePoll(uv_poll_t*& h) {
  if (!h) return;
  uv_poll_stop(h);
  uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* x) { delete reinterpret_cast<uv_poll_t*>(x); });
  h = nullptr;
}

Napi::Object Device::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function f = DefineClass(env, "Device",
                                 {InstanceMethod("listen", &Device::Listen),
                                  InstanceMethod("complete", &Device::Complete),
                                  InstanceMethod("close", &Device::Close),
                                  InstanceMethod("stats", &Device::Stats)});
  exports.Set("Device", f);
  exports.Set("VERSION", Napi::Number::New(env, 1));
  return exports;
}

// new Device({ path, capacity (sectors), blockSize, discardAlignment (sectors), readonly, queues,
//              serial, maxBytes, onRequest(tag, type, sector, buffers[]), onLog(text) })
Device::Device(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Device>(info) {
  Napi::Env env = info.Env();
  Napi::Object o = info[0].As<Napi::Object>();
  path_ = o.Get("path").As<Napi::String>().Utf8Value();
  capacity_ = static_cast<uint64_t>(o.Get("capacity").As<Napi::Number>().DoubleValue());
  blkSize_ = o.Get("blockSize").As<Napi::Number>().Uint32Value();
  discardAlign_ = o.Get("discardAlignment").As<Napi::Number>().Uint32Value();
  readonly_ = o.Get("readonly").As<Napi::Boolean>().Value();
  queues_ = o.Get("queues").As<Napi::Number>().Uint32Value();
  if (queues_ < 1) queues_ = 1;
  if (queues_ > MAX_QUEUES) queues_ = MAX_QUEUES;
  serial_ = o.Get("serial").As<Napi::String>().Utf8Value();
  maxBytes_ = o.Get("maxBytes").As<Napi::Number>().Uint32Value();
  onRequest_ = Napi::Persistent(o.Get("onRequest").As<Napi::Function>());
  onLog_ = Napi::Persistent(o.Get("onLog").As<Napi::Function>());
  rings_.resize(queues_);
  for (uint32_t i = 0; i < queues_; i++) {
    rings_[i].dev = this;
    rings_[i].index = i;
  }
  (void)env;
}

void Device::log(const std::string& s) {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  onLog_.MakeCallback(env.Global(), {Napi::String::New(env, s)});
}

// listen(): bind and listen on the unix socket (the caller removed a stale one); returns 0 or -errno.
Napi::Value Device::Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path_.size() >= sizeof(a.sun_path)) return Napi::Number::New(env, -ENAMETOOLONG);
  memcpy(a.sun_path, path_.c_str(), path_.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Napi::Number::New(env, -errno);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) < 0 || listen(fd, 4) < 0) {
    int e = errno;
    close(fd);
    return Napi::Number::New(env, -e);
  }
  listenFd_ = fd;
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  listenPoll_ = new uv_poll_t;
  uv_poll_init(loop, listenPoll_, fd);
  listenPoll_->data = this;
  uv_poll_start(listenPoll_, UV_READABLE, [](uv_poll_t* h, int, int) { static_cast<Device*>(h->data)->onAccept(); });
  check_ = new uv_check_t;
  uv_check_init(loop, check_);
  check_->data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(check_));
  Ref();  // alive while listening, whatever JavaScript drops
  return Napi::Number::New(env, 0);
}

void Device::onAccept() {
  int fd = accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return;
  if (connFd_ >= 0) {  // one front-end at a time
    log("refused a second front-end connection");
    close(fd);
    return;
  }
  connFd_ = fd;
  connections_++;
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(Env(), &loop);
  connPoll_ = new uv_poll_t;
  uv_poll_init(loop, connPoll_, fd);
  connPoll_->data = this;
  uv_poll_start(connPoll_, UV_READABLE | UV_DISCONNECT,
                [](uv_poll_t* h, int status, int events) { static_cast<Device*>(h->data)->onMessage(); });
  log("front-end connected");
}

void Device::resetRing(Vring& vq) {
  closePoll(vq.kickPoll);
  if (vq.kickFd >= 0) close(vq.kickFd);
  if (vq.callFd >= 0) close(vq.callFd);
  vq.kickFd = vq.callFd = -1;
  vq.desc = nullptr;
  vq.avail = nullptr;
  vq.used = nullptr;
  vq.num = 0;
  vq.descUva = vq.availUva = vq.usedUva = 0;
  vq.lastAvail = vq.usedIdx = vq.signalledUsed = 0;
  vq.signalledValid = false;
  vq.enabled = vq.started = vq.notifyPending = vq.baseReplyPending = false;
  vq.inflight = 0;
}

void Device::disconnect(const char* why) {
  if (connFd_ < 0) return;
  log(std::string("front-end disconnected: ") + why + " (requests " + std::to_string(requests_) + ", kicks " +
      std::to_string(kicks_) + ", notifications " + std::to_string(notifies_) + ")");
  closePoll(connPoll_);
  close(connFd_);
  connFd_ = -1;
  for (auto& vq : rings_) resetRing(vq);
  generation_++;  // completions of requests from before are dropped (their memory stays mapped until then)
  mem_.reset();
  features_ = protocolFeatures_ = 0;
}

void Device::shutdown() {
  disconnect("closed");
  closePoll(listenPoll_);
  if (listenFd_ >= 0) {
    close(listenFd_);
    listenFd_ = -1;
  }
  if (check_) {
    uv_check_stop(check_);
    uv_close(reinterpret_cast<uv_handle_t*>(check_), [](uv_handle_t* x) { delete reinterpret_cast<uv_check_t*>(x); });
    check_ = nullptr;
  }
}

Napi::Value Device::Close(const Napi::CallbackInfo& info) {
  bool wasListening = listenFd_ >= 0;
  shutdown();
  if (wasListening) Unref();
  return info.Env().Undefined();
}

Napi::Value Device::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("connected", Napi::Boolean::New(env, connFd_ >= 0));
  o.Set("connections", Napi::Number::New(env, static_cast<double>(connections_)));
  o.Set("requests", Napi::Number::New(env, static_cast<double>(requests_)));
  o.Set("badRequests", Napi::Number::New(env, static_cast<double>(badRequests_)));
  o.Set("kicks", Napi::Number::New(env, static_cast<double>(kicks_)));
  o.Set("notifications", Napi::Number::New(env, static_cast<double>(notifies_)));
  o.Set("inflight", Napi::Number::New(env, static_cast<double>(pending_.size())));
  o.Set("features", Napi::BigInt::New(env, features_));
  return o;
}

// One message: header (12 bytes), fds in the ancillary data, then the payload.
void Device::onMessage() {
  if (connFd_ < 0) return;
  uint32_t hdr[3];
  alignas(cmsghdr) char cbuf[CMSG_SPACE(MAX_FDS * sizeof(int))];
  iovec iov{hdr, sizeof(hdr)};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = cbuf;
  m.msg_controllen = sizeof(cbuf);
  ssize_t n = recvmsg(connFd_, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  std::vector<int> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      int* p = reinterpret_cast<int*>(CMSG_DATA(c));
      for (size_t i = 0; i < k; i++) fds.push_back(p[i]);
    }
  auto closeFds = [&]() {
    for (int fd : fds)
      if (fd >= 0) close(fd);
  };
  if (n <= 0) {
    closeFds();
    disconnect(n == 0 ? "end of stream" : strerror(errno));
    return;
  }
  if (n != sizeof(hdr) || (m.msg_flags & MSG_CTRUNC) || hdr[2] > MAX_PAYLOAD) {
    closeFds();
    disconnect("malformed message header");
    return;
  }
  uint8_t payload[MAX_PAYLOAD];
  size_t got = 0;
  while (got < hdr[2]) {  // the payload follows at once (the front-end writes the whole message)
    ssize_t k = recv(connFd_, payload + got, hdr[2] - got, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      closeFds();
      disconnect("short message");
      return;
    }
    got += k;
  }
  if (!handle(hdr[0], hdr[1], payload, hdr[2], fds)) {
    closeFds();
    disconnect("protocol error");
    return;
  }
  closeFds();  // handle() took (set to -1) the fds it keeps
}

bool Device::reply(uint32_t req, const void* payload, uint32_t size) {
  uint8_t buf[12 + MAX_PAYLOAD];
  uint32_t h[3] = {req, FLAG_VERSION | FLAG_REPLY, size};
  memcpy(buf, h, 12);
  memcpy(buf + 12, payload, size);
  size_t off = 0, total = 12 + size;
  while (off < total) {
    ssize_t k = send(connFd_, buf + off, total - off, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno == EAGAIN) {
      pollfd p{connFd_, POLLOUT, 0};
      poll(&p, 1, 1000);
      continue;
    }
    if (k <= 0) return false;
    off += k;
  }
  return true;
}

void Device::mapRings() {
  for (auto& vq : rings_) {
    if (!mem_ || vq.num == 0 || vq.descUva == 0) {
      vq.desc = nullptr;
      continue;
    }
    vq.desc = reinterpret_cast<Desc*>(mem_->uva(vq.descUva, 16ull * vq.num));
    vq.avail = reinterpret_cast<uint16_t*>(mem_->uva(vq.availUva, 6 + 2ull * vq.num));
    vq.used = mem_->uva(vq.usedUva, 6 + 8ull * vq.num);
    if (!vq.desc || !vq.avail || !vq.used) {
      vq.desc = nullptr;
      vq.avail = nullptr;
      vq.used = nullptr;
    }
  }
}

void Device::setKick(Vring& vq, int fd) {
  closePoll(vq.kickPoll);
  if (vq.kickFd >= 0) close(vq.kickFd);
  vq.kickFd = fd;
  if (fd < 0) return;
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(Env(), &loop);
  vq.kickPoll = new uv_poll_t;
  uv_poll_init(loop, vq.kickPoll, fd);
  vq.kickPoll->data = &vq;
  uv_poll_start(vq.kickPoll, UV_READABLE, [](uv_poll_t* h, int, int) {
    Vring* r = static_cast<Vring*>(h->data);
    r->dev->onKick(*r);
  });
  vq.started = true;
}

bool Device::handle(uint32_t req, uint32_t flags, uint8_t* p, uint32_t size, std::vector<int>& fds) {
  auto u64 = [&](uint64_t* v) {
    if (size < 8) return false;
    memcpy(v, p, 8);
    return true;
  };
  auto ring = [&](uint32_t idx) -> Vring* { return idx < rings_.size() ? &rings_[idx] : nullptr; };
  // A vring state payload (index, num): the ring, or null for a short payload or a bad index.
  uint32_t num = 0;
  auto state = [&]() -> Vring* {
    if (size < 8) return nullptr;
    uint32_t st[2];
    memcpy(st, p, 8);
    num = st[1];
    return ring(st[0]);
  };
  bool ack = (protocolFeatures_ & PF_REPLY_ACK) && (flags & FLAG_NEED_REPLY);
  uint64_t result = 0;
  switch (req) {
    case GET_FEATURES: {
      uint64_t f = VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES | RING_F_INDIRECT_DESC | RING_F_EVENT_IDX | BLK_F_SEG_MAX |
                   BLK_F_BLK_SIZE | BLK_F_FLUSH | BLK_F_MQ | BLK_F_DISCARD | BLK_F_WRITE_ZEROES;
      if (readonly_) f |= BLK_F_RO;
      return replyU64(req, f);
    }
    case SET_FEATURES:
      if (!u64(&features_)) return false;
      break;
    case GET_PROTOCOL_FEATURES:
      return replyU64(req, PROTOCOL_FEATURES);
    case SET_PROTOCOL_FEATURES: {
      uint64_t v;
      if (!u64(&v)) return false;
      protocolFeatures_ = v & PROTOCOL_FEATURES;
      break;
    }
    case GET_QUEUE_NUM:
      return replyU64(req, queues_);
    case SET_OWNER:
    case RESET_OWNER:
    case SET_LOG_FD:
    case SET_VRING_ERR:
      break;  // fds (if any) are closed by the caller
    case RESET_DEVICE:
      for (auto& vq : rings_) resetRing(vq);
      break;
    case SET_MEM_TABLE: {
      if (size < 8) return false;
      uint32_t nr;
      memcpy(&nr, p, 4);
      if (nr > 8 || size < 8 + 32ull * nr || fds.size() != nr) {
        log("SET_MEM_TABLE: bad region count");
        return false;
      }
      auto table = std::make_shared<MemTable>();
      for (uint32_t i = 0; i < nr; i++) {
        uint64_t v[4];
        memcpy(v, p + 8 + 32 * i, 32);
        size_t len = v[1] + v[3];
        void* base = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fds[i], 0);
        if (base == MAP_FAILED) {
          log(std::string("SET_MEM_TABLE: mmap failed: ") + strerror(errno));
          return false;  // the table destructor unmaps the regions mapped so far
        }
        table->regions.push_back({v[0], v[1], v[2], static_cast<uint8_t*>(base) + v[3], base, len});
      }
      mem_ = table;  // the old table lives on while requests still use it
      mapRings();
      break;
    }
    case SET_VRING_NUM: {
      Vring* vq = state();
      if (!vq || num == 0 || num > MAX_RING || (num & (num - 1))) return false;
      vq->num = num;
      mapRings();
      break;
    }
    case SET_VRING_ADDR: {
      if (size < 40) return false;
      uint32_t idx;
      uint64_t a[4];
      memcpy(&idx, p, 4);
      memcpy(a, p + 8, 32);
      Vring* vq = ring(idx);
      if (!vq) return false;
      vq->descUva = a[0];
      vq->usedUva = a[1];
      vq->availUva = a[2];
      mapRings();
      if (!vq->desc) {
        log("SET_VRING_ADDR: the ring is not in the memory table");
        return false;
      }
      vq->usedIdx = __atomic_load_n(reinterpret_cast<uint16_t*>(vq->used + 2), __ATOMIC_ACQUIRE);
      break;
    }
    case SET_VRING_BASE: {
      Vring* vq = state();
      if (!vq) return false;
      vq->lastAvail = static_cast<uint16_t>(num);
      vq->usedIdx = static_cast<uint16_t>(num);
      vq->signalledValid = false;
      break;
    }
    case GET_VRING_BASE: {
      Vring* vq = state();
      if (!vq) return false;
      // Stop the ring; the answer waits for the requests in flight (their used entries must be
      // written before the front-end takes the ring back).
      closePoll(vq->kickPoll);
      if (vq->kickFd >= 0) close(vq->kickFd);
      vq->kickFd = -1;
      vq->started = false;
      if (vq->inflight > 0) {
        vq->baseReplyPending = true;
        return true;
      }
      uint32_t r[2] = {vq->index, vq->lastAvail};
      return reply(req, r, 8);
    }
    case SET_VRING_KICK:
    case SET_VRING_CALL: {
      uint64_t v;
      if (!u64(&v)) return false;
      Vring* vq = ring(static_cast<uint32_t>(v & 0xff));
      if (!vq) return false;
      int fd = -1;
      if (!(v & 0x100)) {
        if (fds.size() != 1) return false;
        fd = fds[0];
        fds[0] = -1;  // ours now
      }
      if (req == SET_VRING_KICK) {
        setKick(*vq, fd);
        if (!(features_ & F_PROTOCOL_FEATURES)) vq->enabled = true;
        if (fd >= 0) processRing(*vq);  // requests queued before the kick fd came
      } else {
        if (vq->callFd >= 0) close(vq->callFd);
        vq->callFd = fd;
      }
      break;
    }
    case SET_VRING_ENABLE: {
      Vring* vq = state();
      if (!vq) return false;
      vq->enabled = num != 0;
      if (vq->enabled && vq->started) processRing(*vq);
      break;
    }
    case GET_CONFIG: {
      if (size < 12) return false;
      uint32_t off, len;
      memcpy(&off, p, 4);
      memcpy(&len, p + 4, 4);
      if (len > 256 || size < 12 + len) return false;
      uint8_t cfg[256] = {};
      uint8_t full[CONFIG_SIZE] = {};
      uint32_t u;
      memcpy(full + 0, &capacity_, 8);               // capacity (512-byte sectors)
      u = 126;                                         // seg_max
      memcpy(full + 12, &u, 4);
      memcpy(full + 20, &blkSize_, 4);                 // blk_size
      uint16_t nq = static_cast<uint16_t>(queues_);
      memcpy(full + 34, &nq, 2);                       // num_queues
      u = 1u << 22;                                    // max_discard_sectors (2 GiB)
      memcpy(full + 36, &u, 4);
      u = 1;                                           // max_discard_seg
      memcpy(full + 40, &u, 4);
      memcpy(full + 44, &discardAlign_, 4);            // discard_sector_alignment
      u = 1u << 22;                                    // max_write_zeroes_sectors
      memcpy(full + 48, &u, 4);
      u = 1;                                           // max_write_zeroes_seg
      memcpy(full + 52, &u, 4);
      full[56] = 1;                                    // write_zeroes_may_unmap
      for (uint32_t i = 0; i < len; i++)
        if (off + i < CONFIG_SIZE) cfg[i] = full[off + i];
      uint8_t out[12 + 256];
      memcpy(out, p, 12);
      memcpy(out + 12, cfg, len);
      return reply(req, out, 12 + len);
    }
    case SET_CONFIG:
      break;  // writeback (WCE) is not offered: nothing is writable
    default:
      log("unsupported vhost-user request " + std::to_string(req));
      result = 1;
      if (!ack) {
        // A request this back-end does not know and whose answer the front-end may wait for:
        // GET-type requests would hang it, so the connection is dropped (the spec allows it).
        return req != 0 && req != 31 && req != 36 && req != 40;
      }
  }
  if (ack) return replyU64(req, result);
  return true;
}

void Device::onKick(Vring& vq) {
  // One read takes the whole eventfd counter; a second could block the loop on a blocking fd.
  uint64_t v;
  ssize_t r = read(vq.kickFd, &v, 8);
  (void)r;
  kicks_++;
  processRing(vq);
}

void Device::processRing(Vring& vq) {
  const bool eventIdx = features_ & RING_F_EVENT_IDX;
  for (;;) {
    // A request's callback may have dropped the connection (the ring is reset then).
    if (!vq.started || !vq.enabled || !vq.desc) return;
    uint16_t availIdx = __atomic_load_n(&vq.avail[1], __ATOMIC_ACQUIRE);
    if (availIdx == vq.lastAvail) {
      if (!eventIdx) break;
      // Ask for a kick at the next request (avail_event), then look again: one may have come
      // between the load above and the store (virtio 1.1, 2.6.7.2).
      __atomic_store_n(reinterpret_cast<uint16_t*>(vq.used + 4 + 8ull * vq.num), vq.lastAvail, __ATOMIC_RELEASE);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (__atomic_load_n(&vq.avail[1], __ATOMIC_ACQUIRE) == vq.lastAvail) break;
      continue;
    }
    if (static_cast<uint16_t>(availIdx - vq.lastAvail) > vq.num) {
      log("avail index moved by more than the ring size: ring ignored until reset");
      vq.started = false;
      closePoll(vq.kickPoll);
      return;
    }
    while (vq.lastAvail != availIdx && vq.started) {
      uint32_t head = vq.avail[2 + (vq.lastAvail % vq.num)];
      vq.lastAvail++;
      handleRequest(vq, head);
    }
  }
  flushNotifies();
}

void Device::pushUsed(Vring& vq, uint32_t head, uint32_t len) {
  if (!vq.used) return;
  uint8_t* e = vq.used + 4 + 8 * (vq.usedIdx % vq.num);
  memcpy(e, &head, 4);
  memcpy(e + 4, &len, 4);
  vq.usedIdx++;
  __atomic_store_n(reinterpret_cast<uint16_t*>(vq.used + 2), vq.usedIdx, __ATOMIC_RELEASE);
  if (!vq.notifyPending) {
    vq.notifyPending = true;
    if (check_ && !uv_is_active(reinterpret_cast<uv_handle_t*>(check_)))
      uv_check_start(check_, [](uv_check_t* h) { static_cast<Device*>(h->data)->flushNotifies(); });
  }
}

void Device::notify(Vring& vq) {
  vq.notifyPending = false;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (vq.callFd < 0 || !vq.avail) return;
  if (features_ & RING_F_EVENT_IDX) {
    // Notify only when used idx passed used_event since the last notification (2.6.7.2).
    uint16_t event = __atomic_load_n(&vq.avail[2 + vq.num], __ATOMIC_ACQUIRE);
    uint16_t now = vq.usedIdx, old = vq.signalledUsed;
    bool valid = vq.signalledValid;
    vq.signalledUsed = now;
    vq.signalledValid = true;
    if (valid && static_cast<uint16_t>(now - event - 1) >= static_cast<uint16_t>(now - old)) return;
  } else if (__atomic_load_n(&vq.avail[0], __ATOMIC_ACQUIRE) & AVAIL_F_NO_INTERRUPT) {
    return;
  }
  uint64_t one = 1;
  notifies_++;
  ssize_t r = write(vq.callFd, &one, 8);
  (void)r;
}

void Device::flushNotifies() {
  for (auto& vq : rings_)
    if (vq.notifyPending) notify(vq);
  if (check_) uv_check_stop(check_);
}

// Walks one descriptor chain, checks it, and either answers it here or hands it to JavaScript.
void Device::handleRequest(Vring& vq, uint32_t head) {
  requests_++;
  if (head >= vq.num) {
    badRequests_++;
    log("descriptor head out of range");
    pushUsed(vq, head, 0);
    return;
  }
  std::vector<Iov> rd, wr;
  uint64_t rdLen = 0, wrLen = 0;
  const Desc* table = vq.desc;
  uint32_t tableLen = vq.num;
  uint32_t i = head;
  uint32_t count = 0;
  bool indirect = false;
  const char* bad = nullptr;   // the chain is malformed: no status byte can be trusted
  const char* refuse = nullptr;  // the chain is whole but its request is refused
  uint8_t* status = nullptr;   // the last byte of the last device-writable buffer
  for (;;) {
    if (i >= tableLen) {
      bad = "descriptor index out of range";
      break;
    }
    if (++count > tableLen || count > MAX_SEGMENTS) {
      bad = "descriptor chain too long (a loop?)";
      break;
    }
    Desc d;
    memcpy(&d, &table[i], sizeof(d));
    if (d.flags & DESC_F_INDIRECT) {
      if (indirect || (d.flags & DESC_F_NEXT) || d.len % 16 || d.len == 0 || d.len / 16 > MAX_SEGMENTS) {
        bad = "bad indirect descriptor";
        break;
      }
      const Desc* t = reinterpret_cast<const Desc*>(mem_ ? mem_->gpa(d.addr, d.len) : nullptr);
      if (!t) {
        bad = "indirect table outside guest memory";
        break;
      }
      table = t;
      tableLen = d.len / 16;
      indirect = true;
      i = 0;
      count = 0;
      continue;
    }
    bool w = d.flags & DESC_F_WRITE;
    if (!w && !wr.empty() && !refuse) refuse = "device-readable descriptor after a writable one";
    if (w) status = d.len > 0 && mem_ ? mem_->gpa(d.addr + d.len - 1, 1) : nullptr;
    (w ? wrLen : rdLen) += d.len;
    if (rdLen + wrLen > static_cast<uint64_t>(maxBytes_) + 4096 && !refuse) refuse = "request too large";
    uint64_t a = d.addr, left = d.len;
    while (left > 0 && !refuse) {
      uint64_t run = 0;
      uint8_t* h = mem_ ? mem_->gpaRun(a, left, &run) : nullptr;
      if (!h) {
        refuse = "buffer outside guest memory";
        break;
      }
      (w ? wr : rd).push_back({h, run});
      a += run;
      left -= run;
    }
    if (!(d.flags & DESC_F_NEXT)) break;
    i = d.next;
  }
  auto fail = [&](uint8_t st, const char* why) {
    badRequests_++;
    if (why) log(std::string("bad request: ") + why);
    if (status) {
      *status = st;
      pushUsed(vq, head, 1);
    } else {
      pushUsed(vq, head, 0);
    }
  };
  if (bad) status = nullptr;  // a loop or an out-of-range entry: no write into guest memory at all
  if (bad || refuse) {
    fail(S_IOERR, bad ? bad : refuse);
    return;
  }
  if (!status) {
    fail(S_IOERR, "no status byte");
    return;
  }
  if (rdLen < 16) {
    fail(S_IOERR, "no request header");
    return;
  }
  // The header: 16 bytes from the front of the readable buffers.
  uint8_t hdr[16] = {};
  {
    uint64_t got = 0;
    for (auto& v : rd) {
      uint64_t k = v.len < 16 - got ? v.len : 16 - got;
      memcpy(hdr + got, v.p, k);
      got += k;
      if (got == 16) break;
    }
  }
  uint32_t type;
  uint64_t sector;
  memcpy(&type, hdr, 4);
  memcpy(&sector, hdr + 8, 8);
  // Data: the readable bytes after the header, the writable bytes before the status byte.
  std::vector<Iov> data;
  uint64_t dataLen = 0;
  // Buffers adjacent in our mapping (guest pages that are adjacent) become one.
  auto add = [&data](uint8_t* p, uint64_t len) {
    if (!data.empty() && data.back().p + data.back().len == p)
      data.back().len += len;
    else
      data.push_back({p, len});
  };
  if (type == T_IN || type == T_GET_ID) {
    uint64_t want = wrLen - 1;
    for (auto& v : wr) {
      uint64_t k = v.len < want - dataLen ? v.len : want - dataLen;
      if (k) add(v.p, k);
      dataLen += k;
    }
  } else {
    uint64_t skip = 16;
    for (auto& v : rd) {
      uint64_t s = v.len < skip ? v.len : skip;
      skip -= s;
      if (v.len > s) {
        add(v.p + s, v.len - s);
        dataLen += v.len - s;
      }
    }
  }
  uint32_t inLen = 1;
  switch (type) {
    case T_IN:
    case T_OUT:
      if (dataLen % 512 || sector > capacity_ || dataLen / 512 > capacity_ - sector) {
        fail(S_IOERR, "I/O beyond the end of the device or not in whole sectors");
        return;
      }
      if (dataLen > maxBytes_) {
        fail(S_IOERR, "request too large");
        return;
      }
      if (type == T_OUT && readonly_) {
        fail(S_IOERR, nullptr);  // read-only map: refused like qemu-storage-daemon does
        return;
      }
      if (type == T_IN) inLen = static_cast<uint32_t>(dataLen) + 1;
      break;
    case T_FLUSH:
      data.clear();
      break;
    case T_GET_ID: {
      uint8_t id[20] = {};
      memcpy(id, serial_.data(), serial_.size() < 20 ? serial_.size() : 20);
      uint64_t off = 0;
      for (auto& v : data) {
        uint64_t k = v.len < 20 - off ? v.len : 20 - off;
        memcpy(v.p, id + off, k);
        off += k;
        if (off == 20) break;
      }
      *status = S_OK;
      pushUsed(vq, head, static_cast<uint32_t>(off) + 1);
      return;
    }
    case T_DISCARD:
    case T_WRITE_ZEROES:
      if (readonly_) {
        fail(S_IOERR, nullptr);
        return;
      }
      if (dataLen == 0 || dataLen % 16 || dataLen > 16 * 16) {
        fail(S_IOERR, "bad discard/write-zeroes segments");
        return;
      }
      break;
    default:
      fail(S_UNSUPP, nullptr);
      return;
  }
  // Hand it to JavaScript: Buffers over guest memory (no copy).
  uint64_t tag = (static_cast<uint64_t>(generation_) << 32) | nextTag_++;
  if ((nextTag_ & 0xffffffffull) == 0) nextTag_ = 1;
  pending_[tag] = Pending{mem_, status, inLen, head, vq.index};
  vq.inflight++;
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  Napi::Array bufs = Napi::Array::New(env, data.size());
  for (size_t k = 0; k < data.size(); k++)
    bufs.Set(static_cast<uint32_t>(k),
             Napi::Buffer<uint8_t>::New(env, data[k].p, data[k].len, [](Napi::Env, uint8_t*) {}));
  onRequest_.MakeCallback(env.Global(), {Napi::Number::New(env, static_cast<double>(tag)),
                                        Napi::Number::New(env, type),
                                        Napi::Number::New(env, static_cast<double>(sector)), bufs,
                                        Napi::Number::New(env, vq.index)});
}

void Device::finishInflight(Vring& vq) {
  if (vq.inflight > 0) vq.inflight--;
  if (vq.inflight == 0 && vq.baseReplyPending && connFd_ >= 0) {
    vq.baseReplyPending = false;
    flushNotifies();
    uint32_t r[2] = {vq.index, vq.lastAvail};
    if (!reply(GET_VRING_BASE, r, 8)) disconnect("cannot answer GET_VRING_BASE");
  }
}

// complete(tag, status): writes the status byte, puts the chain on the used ring; the guest is
// notified once per loop turn (uv_check), not once per request.
Napi::Value Device::Complete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t tag = static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue());
  uint32_t st = info[1].As<Napi::Number>().Uint32Value();
  auto it = pending_.find(tag);
  if (it == pending_.end()) return Napi::Boolean::New(env, false);
  Pending pd = std::move(it->second);
  pending_.erase(it);
  if ((tag >> 32) != generation_) return Napi::Boolean::New(env, false);  // from before a reconnect
  Vring& vq = rings_[pd.queue];
  *pd.status = static_cast<uint8_t>(st);
  pushUsed(vq, pd.head, st == S_OK ? pd.inLen : 1);
  finishInflight(vq);
  return Napi::Boolean::New(env, true);
}

Napi::Object InitAll(Napi::Env env, Napi::Object exports) { return Device::Init(env, exports); }

}  // namespace

NODE_API_MODULE(vhost, InitAll)
