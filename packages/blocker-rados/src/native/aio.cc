// Object I/O: rados_aio_* calls settled as promises (no thread is blocked while they run).
#include "common.h"

namespace archip {

namespace {
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
uint64_t Offset(const Napi::Value& v) { return static_cast<uint64_t>(v.As<Napi::Number>().Int64Value()); }

// A new op on object info[0], for librados call `call` (named in its error).
std::unique_ptr<AioOp> NewOp(const Napi::CallbackInfo& info, const char* call, AioOp::Kind kind = AioOp::kVoid) {
  auto op = std::make_unique<AioOp>(info.Env());
  op->oid = info[0].As<Napi::String>().Utf8Value();
  op->call = call;
  op->kind = kind;
  return op;
}
}  // namespace

// read(oid, buffer, offset) -> Promise<bytes read>; short at the end of the object.
Napi::Value Pool::Read(const Napi::CallbackInfo& info) { return Transfer(info, true); }

// write(oid, buffer, offset) -> Promise<void>, settled when the write is committed.
Napi::Value Pool::Write(const Napi::CallbackInfo& info) { return Transfer(info, false); }

Napi::Value Pool::Transfer(const Napi::CallbackInfo& info, bool read) {
  const char* usage = read ? "read(oid, buffer, offset)" : "write(oid, buffer, offset)";
  if (!Check(info) || !Usage(info, info[0].IsString() && IsBytes(info[1]) && info[2].IsNumber(), usage))
    return info.Env().Undefined();
  Bytes b = BytesOf(info[1]);
  uint64_t off = Offset(info[2]);
  auto op = NewOp(info, read ? "rados_aio_read" : "rados_aio_write", read ? AioOp::kLength : AioOp::kVoid);
  op->keep = Napi::Persistent(info[1]);  // the Buffer librados fills or reads from
  const std::string& oid = op->oid;      // lives as long as the op
  rados_ioctx_t io = io_;
  return Submit(info, std::move(op), [&](rados_completion_t c) {
    return read ? rados_aio_read(io, oid.c_str(), c, b.data, b.len, off)
                : rados_aio_write(io, oid.c_str(), c, b.data, b.len, off);
  });
}

// Runs the op's compound write op (op->writeOp) on its object.
Napi::Value Pool::Operate(const Napi::CallbackInfo& info, std::unique_ptr<AioOp> op) {
  const std::string& oid = op->oid;  // lives as long as the op
  rados_ioctx_t io = io_;
  rados_write_op_t wop = op->writeOp;
  return Submit(info, std::move(op), [&](rados_completion_t c) {
    return rados_aio_write_op_operate(wop, io, c, oid.c_str(), nullptr, 0);
  });
}

// writeExtents(oid, buffers[], offsets[]) -> Promise<void>: one compound write op, the extents
// applied in order, all or none. rados_write_op_write copies each buffer at once.
Napi::Value Pool::WriteExtents(const Napi::CallbackInfo& info) {
  const char* usage = "writeExtents(oid, buffers[], offsets[])";
  if (!Check(info) || !Usage(info, info[0].IsString() && info[1].IsArray() && info[2].IsArray(), usage))
    return info.Env().Undefined();
  Napi::Array bufs = info[1].As<Napi::Array>();
  Napi::Array offs = info[2].As<Napi::Array>();
  uint32_t n = bufs.Length();
  bool ok = n > 0 && offs.Length() == n;
  for (uint32_t i = 0; ok && i < n; i++) ok = IsBytes(bufs.Get(i)) && offs.Get(i).IsNumber();
  if (!Usage(info, ok, usage)) return info.Env().Undefined();
  auto op = NewOp(info, "write extents");
  op->writeOp = rados_create_write_op();
  for (uint32_t i = 0; i < n; i++) {
    Bytes b = BytesOf(bufs.Get(i));
    rados_write_op_write(op->writeOp, b.data, b.len, Offset(offs.Get(i)));
  }
  return Operate(info, std::move(op));
}

// writeFull(oid, buffer) -> Promise<void>: replaces the whole object.
Napi::Value Pool::WriteFull(const Napi::CallbackInfo& info) {
  if (!Check(info) || !Usage(info, info[0].IsString() && IsBytes(info[1]), "writeFull(oid, buffer)"))
    return info.Env().Undefined();
  Bytes b = BytesOf(info[1]);
  auto op = NewOp(info, "rados_aio_write_full");
  op->keep = Napi::Persistent(info[1]);
  const std::string& oid = op->oid;  // lives as long as the op
  rados_ioctx_t io = io_;
  return Submit(info, std::move(op), [&](rados_completion_t c) {
    return rados_aio_write_full(io, oid.c_str(), c, b.data, b.len);
  });
}

// create(oid, exclusive, buffer?) -> Promise<void>: one atomic write op that creates the object
// (failing with EEXIST when `exclusive` and it exists) and, with a buffer, sets its whole content.
Napi::Value Pool::Create(const Napi::CallbackInfo& info) {
  if (!Check(info) || !Usage(info, info[0].IsString() && info.Length() >= 2, "create(oid, exclusive, buffer?)"))
    return info.Env().Undefined();
  bool exclusive = info[1].ToBoolean().Value();
  auto op = NewOp(info, exclusive ? "create exclusive" : "create");
  op->writeOp = rados_create_write_op();
  rados_write_op_create(op->writeOp, exclusive ? LIBRADOS_CREATE_EXCLUSIVE : LIBRADOS_CREATE_IDEMPOTENT,
                        nullptr);
  if (info.Length() > 2 && IsBytes(info[2])) {
    Bytes b = BytesOf(info[2]);
    op->keep = Napi::Persistent(info[2]);
    rados_write_op_write_full(op->writeOp, b.data, b.len);
  }
  return Operate(info, std::move(op));
}

// remove(oid) -> Promise<void>
Napi::Value Pool::Remove(const Napi::CallbackInfo& info) {
  if (!Check(info) || !Usage(info, info[0].IsString(), "remove(oid)")) return info.Env().Undefined();
  auto op = NewOp(info, "rados_aio_remove");
  const std::string& oid = op->oid;  // lives as long as the op
  rados_ioctx_t io = io_;
  return Submit(info, std::move(op),
                [&](rados_completion_t c) { return rados_aio_remove(io, oid.c_str(), c); });
}

// stat(oid) -> Promise<{size, mtime}>
Napi::Value Pool::Stat(const Napi::CallbackInfo& info) {
  if (!Check(info) || !Usage(info, info[0].IsString(), "stat(oid)")) return info.Env().Undefined();
  auto op = NewOp(info, "rados_aio_stat", AioOp::kStat);
  const std::string& oid = op->oid;  // lives as long as the op
  rados_ioctx_t io = io_;
  AioOp* raw = op.get();
  return Submit(info, std::move(op), [&](rados_completion_t c) {
    return rados_aio_stat(io, oid.c_str(), c, &raw->size, &raw->mtime);
  });
}

}  // namespace archip
