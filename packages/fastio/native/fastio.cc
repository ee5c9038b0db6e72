// @archipelago/fastio: the few Linux calls Node has no API for.
//
//   preadNowait(fd, buffer, offset, length, position) -> bytes read (>= 0) or -errno
//     One preadv2(2) with RWF_NOWAIT on the calling (main) thread: it copies from the page cache
//     and returns -EAGAIN instead of blocking when any of the data would need disk I/O, so the
//     caller can fall back to the libuv thread pool. Never blocks on I/O, never throws on a
//     system error (the JS side turns -errno into an error or a fallback).
//   setSendBuffer(fd, bytes) -> the effective SO_SNDBUF (getsockopt), or -errno
//   largeBuffer(bytes) -> a Buffer over its own anonymous mapping, aligned to 2 MiB and advised
//     MADV_HUGEPAGE (unmapped when the Buffer is collected), or -errno when mmap fails
//   addressAlignment(typedArray) -> the largest power of two (capped at 1 MiB) dividing the
//     address of the array's first byte (an O_DIRECT transfer needs 512 or 4096)
//   flock(fd, op) -> 0, or -errno (-EWOULDBLOCK when another open file description holds a
//     conflicting lock). op is LOCK_SH, LOCK_EX or LOCK_UN; LOCK_NB is always added: it runs on
//     the main thread and never waits (a caller that wants to wait polls).
//   sendNowait(fd, buffers) -> bytes sent (>= 0) or -errno
//     One sendmsg(2) of the Uint8Arrays in `buffers` (up to 64) with MSG_DONTWAIT | MSG_NOSIGNAL
//     on the calling thread: what the socket buffer takes now (a short count when it is full,
//     -EAGAIN when it takes nothing); never blocks, never raises SIGPIPE (-EPIPE instead).
//   recvNowait(fd, buffer, offset, length) -> bytes received (> 0), 0 at end of stream, or -errno
//     One recv(2) with MSG_DONTWAIT into buffer[offset, offset+length) on the calling thread:
//     what the socket holds now, -EAGAIN when it holds nothing; never blocks.
//
// Arguments are checked here (types, buffer bounds): a bad call throws a TypeError/RangeError,
// never reads or writes outside the buffer.
#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

namespace {

bool IntArg(const Napi::CallbackInfo& info, size_t i, int64_t min, int64_t max, int64_t* out) {
  Napi::Env env = info.Env();
  if (!info[i].IsNumber()) {
    Napi::TypeError::New(env, "argument " + std::to_string(i) + " must be a number")
        .ThrowAsJavaScriptException();
    return false;
  }
  double d = info[i].As<Napi::Number>().DoubleValue();
  int64_t v = static_cast<int64_t>(d);
  if (static_cast<double>(v) != d || v < min || v > max) {
    Napi::RangeError::New(env, "argument " + std::to_string(i) + " is out of range")
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = v;
  return true;
}

Napi::Value PreadNowait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[1].IsTypedArray()) {
    Napi::TypeError::New(env, "preadNowait(fd, buffer, offset, length, position)")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_uint8_array) {
    Napi::TypeError::New(env, "buffer must be a Uint8Array").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array buf = info[1].As<Napi::Uint8Array>();
  int64_t fd, off, len, pos;
  if (!IntArg(info, 0, 0, INT32_MAX, &fd)) return env.Undefined();
  if (!IntArg(info, 2, 0, static_cast<int64_t>(buf.ByteLength()), &off)) return env.Undefined();
  if (!IntArg(info, 3, 0, static_cast<int64_t>(buf.ByteLength()) - off, &len)) return env.Undefined();
  if (!IntArg(info, 4, 0, INT64_MAX, &pos)) return env.Undefined();
  if (len == 0) return Napi::Number::New(env, 0);
  struct iovec iov;
  iov.iov_base = buf.Data() + off;
  iov.iov_len = static_cast<size_t>(len);
  ssize_t n;
  do {
    n = preadv2(static_cast<int>(fd), &iov, 1, static_cast<off_t>(pos), RWF_NOWAIT);
  } while (n < 0 && errno == EINTR);
  return Napi::Number::New(env, n < 0 ? -static_cast<double>(errno) : static_cast<double>(n));
}

Napi::Value SetSendBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2) {
    Napi::TypeError::New(env, "setSendBuffer(fd, bytes)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int64_t fd, bytes;
  if (!IntArg(info, 0, 0, INT32_MAX, &fd)) return env.Undefined();
  if (!IntArg(info, 1, 1, INT32_MAX, &bytes)) return env.Undefined();
  int v = static_cast<int>(bytes);
  if (setsockopt(static_cast<int>(fd), SOL_SOCKET, SO_SNDBUF, &v, sizeof v) != 0)
    return Napi::Number::New(env, -static_cast<double>(errno));
  int got = 0;
  socklen_t gl = sizeof got;
  if (getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_SNDBUF, &got, &gl) != 0)
    return Napi::Number::New(env, -static_cast<double>(errno));
  return Napi::Number::New(env, got);
}

constexpr size_t kHuge = 2u << 20;

Napi::Value LargeBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1) {
    Napi::TypeError::New(env, "largeBuffer(bytes)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int64_t bytes;
  // Up to 1 GiB: a data-path buffer, not a heap.
  if (!IntArg(info, 0, 1, int64_t{1} << 30, &bytes)) return env.Undefined();
  size_t len = static_cast<size_t>(bytes);
  // Over-map by one huge page so the start can be moved to a 2 MiB boundary, then give the
  // slack back: the kernel can back a 2 MiB-aligned range with huge pages.
  size_t span = len + kHuge;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return Napi::Number::New(env, -static_cast<double>(errno));
  uintptr_t base = reinterpret_cast<uintptr_t>(raw);
  uintptr_t start = (base + kHuge - 1) & ~(uintptr_t{kHuge} - 1);
  size_t mapped = (len + 4095) & ~size_t{4095};
  if (start > base) munmap(raw, start - base);
  uintptr_t end = start + mapped;
  if (base + span > end) munmap(reinterpret_cast<void*>(end), base + span - end);
  // Advice only: without THP (or with it off) this is a plain mapping, still page-aligned.
  madvise(reinterpret_cast<void*>(start), mapped, MADV_HUGEPAGE);
  auto* data = reinterpret_cast<uint8_t*>(start);
  // Tell V8 the mapping's size, so that dropped buffers are collected (and unmapped) in time.
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(mapped));
  return Napi::Buffer<uint8_t>::New(env, data, len, [mapped](Napi::Env fenv, uint8_t* p) {
    munmap(p, mapped);
    Napi::MemoryManagement::AdjustExternalMemory(fenv, -static_cast<int64_t>(mapped));
  });
}

Napi::Value AddressAlignment(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) {
    Napi::TypeError::New(env, "addressAlignment(typedArray)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  void* base = ta.ArrayBuffer().Data();
  if (base == nullptr) return Napi::Number::New(env, 0);  // detached or empty: no address
  uintptr_t a = reinterpret_cast<uintptr_t>(base) + ta.ByteOffset();
  uintptr_t align = 1u << 20;
  while (align > 1 && (a & (align - 1)) != 0) align >>= 1;
  return Napi::Number::New(env, static_cast<double>(align));
}

Napi::Value Flock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, op;  // a missing argument is "not a number" to IntArg
  if (!IntArg(info, 0, 0, INT32_MAX, &fd) || !IntArg(info, 1, 0, INT32_MAX, &op)) return env.Undefined();
  if (op != LOCK_SH && op != LOCK_EX && op != LOCK_UN) {
    Napi::RangeError::New(env, "op must be LOCK_SH, LOCK_EX or LOCK_UN").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int r;
  do {
    r = flock(static_cast<int>(fd), static_cast<int>(op) | LOCK_NB);
  } while (r < 0 && errno == EINTR);
  return Napi::Number::New(env, r < 0 ? -static_cast<double>(errno) : 0);
}

Napi::Value RecvNowait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    Napi::TypeError::New(env, "recvNowait(fd, buffer, offset, length): buffer must be a Uint8Array")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array buf = info[1].As<Napi::Uint8Array>();
  int64_t fd, off, len;
  if (!IntArg(info, 0, 0, INT32_MAX, &fd)) return env.Undefined();
  if (!IntArg(info, 2, 0, static_cast<int64_t>(buf.ByteLength()), &off)) return env.Undefined();
  if (!IntArg(info, 3, 0, static_cast<int64_t>(buf.ByteLength()) - off, &len)) return env.Undefined();
  if (len == 0) return Napi::Number::New(env, 0);
  ssize_t n;
  do {
    n = recv(static_cast<int>(fd), buf.Data() + off, static_cast<size_t>(len), MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  return Napi::Number::New(env, n < 0 ? -static_cast<double>(errno) : static_cast<double>(n));
}

constexpr uint32_t kMaxSendBuffers = 64;

Napi::Value SendNowait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!IntArg(info, 0, 0, INT32_MAX, &fd)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsArray()) {
    Napi::TypeError::New(env, "sendNowait(fd, buffers): buffers must be an array").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array arr = info[1].As<Napi::Array>();
  uint32_t count = arr.Length();
  if (count > kMaxSendBuffers) {
    Napi::RangeError::New(env, "sendNowait: at most 64 buffers").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct iovec iov[kMaxSendBuffers];
  for (uint32_t i = 0; i < count; i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      Napi::TypeError::New(env, "sendNowait: every buffer must be a Uint8Array").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Uint8Array b = v.As<Napi::Uint8Array>();
    iov[i].iov_base = b.Data();
    iov[i].iov_len = b.ByteLength();
  }
  struct msghdr msg = {};
  msg.msg_iov = iov;
  msg.msg_iovlen = count;
  ssize_t n;
  do {
    n = sendmsg(static_cast<int>(fd), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return Napi::Number::New(env, n < 0 ? -static_cast<double>(errno) : static_cast<double>(n));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("sendNowait", Napi::Function::New(env, SendNowait, "sendNowait"));
  exports.Set("recvNowait", Napi::Function::New(env, RecvNowait, "recvNowait"));
  exports.Set("largeBuffer", Napi::Function::New(env, LargeBuffer, "largeBuffer"));
  exports.Set("addressAlignment", Napi::Function::New(env, AddressAlignment, "addressAlignment"));
  exports.Set("preadNowait", Napi::Function::New(env, PreadNowait, "preadNowait"));
  exports.Set("setSendBuffer", Napi::Function::New(env, SetSendBuffer, "setSendBuffer"));
  exports.Set("flock", Napi::Function::New(env, Flock, "flock"));
  exports.Set("LOCK_SH", Napi::Number::New(env, LOCK_SH));
  exports.Set("LOCK_EX", Napi::Number::New(env, LOCK_EX));
  exports.Set("LOCK_UN", Napi::Number::New(env, LOCK_UN));
  exports.Set("VERSION", Napi::Number::New(env, 4));
  return exports;
}

}  // namespace

NODE_API_MODULE(fastio, Init)
