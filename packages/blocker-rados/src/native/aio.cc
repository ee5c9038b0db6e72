// Object I/O: rados_aio_* calls settled as promises (no thread is blocked while they run).
#include "common.h"

namespace archip {

namespace {
bool Args(const Napi::CallbackInfo& info, size_t n, const char* usage) {
  if (info.Length() < n || !info[0].IsString()) {
    Napi::TypeError::New(info.Env(), usage).ThrowAsJavaScriptException();
    return false;
  }
  return true;
}
bool IsBytes(const Napi::Value& v) { return v.IsTypedArray() || v.IsBuffer(); }
struct Bytes {
  char* data;
  size_t len;
};
Bytes BytesOf(const Napi::Value& v) {
  Napi::TypedArray t = v.As<Napi::TypedArray>();
  Napi::ArrayBuffer ab = t.ArrayBuffer();
  return {static_cast<char*>(ab.Data()) + t.ByteOffset(), t.ByteLength()};
}
}  // namespace

// read(oid, buffer, offset) -> Promise<bytes read>; short at the end of the object.
Napi::Value Pool::Read(const Napi::CallbackInfo& info) {
  if (!Check(info) || !Args(info, 3, "read(oid, buffer, offset)")) return info.Env().Undefined();
  if (!IsBytes(info[1]) || !info[2].IsNumber()) {
    Napi::TypeError::New(info.Env(), "read(oid, buffer, offset)").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Bytes b = BytesOf(info[1]);
  uint64_t off = static_cast<uint64_t>(info[2].As<Napi::Number>().Int64Value());
  auto op = std::make_unique<AioOp>(info.Env());
  op->oid = info[0].As<Napi::String>().Utf8Value();
  const std::string& oid = op->oid;  // lives as long as the op
  op->keep = Napi::Persistent(info[1]);
  op->kind = AioOp::kLength;
  op->call = "rados_aio_read";
  rados_ioctx_t io = io_;
  return Submit(info, std::move(op), [&](rados_completion_t c) {
    return rados_aio_read(io, oid.c_str(), c, b.data, b.len, off);
  });
}

// write(oid, buffer, offset) -> Promise<void>, settled when the write is committed.
Napi::Value Pool::Write(const Napi::CallbackInfo& info) {
  if (!Check(info) || !Args(info, 3, "write(oid, buffer, offset)")) return info.Env().Undefined();
  if (!IsBytes(info[1]) || !info[2].IsNumber()) {
    Napi::TypeError::New(info.Env(), "write(oid, buffer, offset)").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Bytes b = BytesOf(info[1]);
  uint64_t off = static_cast<uint64_t>(info[2].As<Napi::Number>().Int64Value());
  auto op = std::make_unique<AioOp>(info.Env());
  op->oid = info[0].As<Napi::String>().Utf8Value();
  const std::string& oid = op->oid;  // lives as long as the op
  op->keep = Napi::Persistent(info[1]);
  op->call = "rados_aio_write";
  rados_ioctx_t io = io_;
  return Submit(info, std::move(op), [&](rados_completion_t c) {
    return rados_aio_write(io, oid.c_str(), c, b.data, b.len, off);
  });
}

// writeExtents(oid, buffers[], offsets[]) -> Promise<void>: one compound write op, the extents
// applied in order, all or none. rados_write_op_write copies each buffer at once.
Napi::Value Pool::WriteExtents(const Napi::CallbackInfo& info) {
  const char* usage = "writeExtents(oid, buffers[], offsets[])";
  if (!Check(info) || !Args(info, 3, usage)) return info.Env().Undefined();
  if (!info[1].IsArray() || !info[2].IsArray()) {
    Napi::TypeError::New(info.Env(), usage).ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Napi::Array bufs = info[1].As<Napi::Array>();
  Napi::Array offs = info[2].As<Napi::Array>();
  uint32_t n = bufs.Length();
  if (n == 0 || offs.Length() != n) {
    Napi::TypeError::New(info.Env(), usage).ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value b = bufs.Get(i), o = offs.Get(i);
    if (!IsBytes(b) || !o.IsNumber()) {
      Napi::TypeError::New(info.Env(), usage).ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
  }
  auto op = std::make_unique<AioOp>(info.Env());
  op->oid = info[0].As<Napi::String>().Utf8Value();
  const std::string& oid = op->oid;  // lives as long as the op
  op->call = "write extents";
  op->writeOp = rados_create_write_op();
  for (uint32_t i = 0; i < n; i++) {
    Bytes b = BytesOf(bufs.Get(i));
    uint64_t off = static_cast<uint64_t>(offs.Get(i).As<Napi::Number>().Int64Value());
    rados_write_op_write(op->writeOp, b.data, b.len, off);
  }
  rados_ioctx_t io = io_;
  rados_write_op_t wop = op->writeOp;
  return Submit(info, std::move(op), [&](rados_completion_t c) {
    return rados_aio_write_op_operate(wop, io, c, oid.c_str(), nullptr, 0);
  });
}

// writeFull(oid, buffer) -> Promise<void>: replaces the whole object.
Napi::Value Pool::WriteFull(const Napi::CallbackInfo& info) {
  if (!Check(info) || !Args(info, 2, "writeFull(oid, buffer)")) return info.Env().Undefined();
  if (!IsBytes(info[1])) {
    Napi::TypeError::New(info.Env(), "writeFull(oid, buffer)").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  Bytes b = BytesOf(info[1]);
  auto op = std::make_unique<AioOp>(info.Env());
  op->oid = info[0].As<Napi::String>().Utf8Value();
  const std::string& oid = op->oid;  // lives as long as the op
  op->keep = Napi::Persistent(info[1]);
  op->call = "rados_aio_write_full";
  rados_ioctx_t io = io_;
  return Submit(info, std::move(op), [&](rados_completion_t c) {
    return rados_aio_write_full(io, oid.c_str(), c, b.data, b.len);
  });
}

// create(oid, exclusive, buffer?) -> Promise<void>: one atomic write op that creates the object
// (failing with EEXIST when `exclusive` and it exists) and, with a buffer, sets its whole content.
Napi::Value Pool::Create(const Napi::CallbackInfo& info) {
  if (!Check(info) || !Args(info, 2, "create(oid, exclusive, buffer?)")) return info.Env().Undefined();
  bool exclusive = info[1].ToBoolean().Value();
  auto op = std::make_unique<AioOp>(info.Env());
  op->oid = info[0].As<Napi::String>().Utf8Value();
  const std::string& oid = op->oid;  // lives as long as the op
  op->call = exclusive ? "create exclusive" : "create";
  op->writeOp = rados_create_write_op();
  rados_write_op_create(op->writeOp, exclusive ? LIBRADOS_CREATE_EXCLUSIVE : LIBRADOS_CREATE_IDEMPOTENT,
                        nullptr);
  if (info.Length() > 2 && IsBytes(info[2])) {
    Bytes b = BytesOf(info[2]);
    op->keep = Napi::Persistent(info[2]);
    rados_write_op_write_full(op->writeOp, b.data, b.len);
  }
  rados_ioctx_t io = io_;
  rados_write_op_t wop = op->writeOp;
  return Submit(info, std::move(op), [&](rados_completion_t c) {
    return rados_aio_write_op_operate(wop, io, c, oid.c_str(), nullptr, 0);
  });
}

// remove(oid) -> Promise<void>
Napi::Value Pool::Remove(const Napi::CallbackInfo& info) {
  if (!Check(info) || !Args(info, 1, "remove(oid)")) return info.Env().Undefined();
  auto op = std::make_unique<AioOp>(info.Env());
  op->oid = info[0].As<Napi::String>().Utf8Value();
  const std::string& oid = op->oid;  // lives as long as the op
  op->call = "rados_aio_remove";
  rados_ioctx_t io = io_;
  return Submit(info, std::move(op),
                [&](rados_completion_t c) { return rados_aio_remove(io, oid.c_str(), c); });
}

// stat(oid) -> Promise<{size, mtime}>
Napi::Value Pool::Stat(const Napi::CallbackInfo& info) {
  if (!Check(info) || !Args(info, 1, "stat(oid)")) return info.Env().Undefined();
  auto op = std::make_unique<AioOp>(info.Env());
  op->oid = info[0].As<Napi::String>().Utf8Value();
  const std::string& oid = op->oid;  // lives as long as the op
  op->call = "rados_aio_stat";
  op->kind = AioOp::kStat;
  rados_ioctx_t io = io_;
  AioOp* raw = op.get();
  return Submit(info, std::move(op), [&](rados_completion_t c) {
    return rados_aio_stat(io, oid.c_str(), c, &raw->size, &raw->mtime);
  });
}

}  // namespace archip
