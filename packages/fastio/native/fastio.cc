// @archipelago/fastio: the few Linux calls Node has no API for.
//
//   preadNowait(fd, buffer, offset, length, position) -> bytes read (>= 0) or -errno
//     One preadv2(2) with RWF_NOWAIT on the calling (main) thread: it copies from the page cache
//     and returns -EAGAIN instead of blocking when any of the data would need disk I/O, so the
//     caller can fall back to the libuv thread pool. Never blocks on I/O, never throws on a
//     system error (the JS side turns -errno into an error or a fallback).
//   setSendBuffer(fd, bytes) -> the effective SO_SNDBUF (getsockopt), or -errno
//
// Arguments are checked here (types, buffer bounds): a bad call throws a TypeError/RangeError,
// never reads or writes outside the buffer.
#include <napi.h>

#include <cerrno>
#include <cstdint>
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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("preadNowait", Napi::Function::New(env, PreadNowait, "preadNowait"));
  exports.Set("setSendBuffer", Napi::Function::New(env, SetSendBuffer, "setSendBuffer"));
  exports.Set("VERSION", Napi::Number::New(env, 1));
  return exports;
}

}  // namespace

NODE_API_MODULE(fastio, Init)
