// Compound object operations (rados_write_op_t / rados_read_op_t): several steps on one object,
// applied all or none. The lock code uses them to change a cls_lock lock and its record (an xattr)
// together, guarded by a compare of the record (compare-and-swap), and to read both at once.
// They are not on the data path: each runs synchronously on a libuv worker thread.
#include "common.h"

namespace archip {

namespace {

// One step of a compound op, copied out of its JavaScript description on the JS thread.
struct Step {
  enum Kind { kCmpXattr, kSetXattr, kRmXattr, kExec, kCreate, kGetXattrs } kind = kExec;
  std::string name;    // xattr name, or the class of an exec
  std::string method;  // exec: the class method
  std::string data;    // xattr value, or the exec input
  bool exclusive = false;
  bool failOk = false;
};

bool BytesInto(const Napi::Value& v, std::string* out) {
  if (!v.IsTypedArray()) return false;
  Napi::TypedArray t = v.As<Napi::TypedArray>();
  Napi::ArrayBuffer ab = t.ArrayBuffer();
  out->assign(static_cast<const char*>(ab.Data()) + t.ByteOffset(), t.ByteLength());
  return true;
}

// Parses `steps` ({kind, name?, value?, cls?, method?, input?, exclusive?, failOk?}[]); false
// when one is malformed or not allowed in this kind of op.
bool ParseSteps(const Napi::Value& v, bool write, std::vector<Step>* out) {
  if (!v.IsArray()) return false;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsObject()) return false;
    Napi::Object o = e.As<Napi::Object>();
    Napi::Value kind = o.Get("kind");
    if (!kind.IsString()) return false;
    std::string k = kind.As<Napi::String>().Utf8Value();
    Step s;
    s.failOk = o.Get("failOk").ToBoolean().Value();
    auto str = [&](const char* key, std::string* into) {
      Napi::Value x = o.Get(key);
      if (!x.IsString()) return false;
      *into = x.As<Napi::String>().Utf8Value();
      return true;
    };
    bool ok = true;
    if (k == "cmpxattr") {
      s.kind = Step::kCmpXattr;
      ok = str("name", &s.name) && BytesInto(o.Get("value"), &s.data);
    } else if (k == "setxattr" && write) {
      s.kind = Step::kSetXattr;
      ok = str("name", &s.name) && BytesInto(o.Get("value"), &s.data);
    } else if (k == "rmxattr" && write) {
      s.kind = Step::kRmXattr;
      ok = str("name", &s.name);
    } else if (k == "exec") {
      s.kind = Step::kExec;
      ok = str("cls", &s.name) && str("method", &s.method) && BytesInto(o.Get("input"), &s.data);
    } else if (k == "create" && write) {
      s.kind = Step::kCreate;
      s.exclusive = o.Get("exclusive").ToBoolean().Value();
    } else if (k == "getxattrs" && !write) {
      s.kind = Step::kGetXattrs;
    } else {
      ok = false;
    }
    if (!ok) return false;
    out->push_back(std::move(s));
  }
  return true;
}

// What a compound op left behind: the op's return value, each step's own return value (exec and
// getxattrs report one; others 0), and the read steps' output.
struct OpOut {
  int rc = 0;
  std::vector<int> prvals;
  std::vector<std::string> execOut;                                 // per step (exec)
  std::vector<std::vector<std::pair<std::string, std::string>>> xattrs;  // per step (getxattrs)
};

Napi::Value OpResult(Napi::Env env, const OpOut& out, const std::vector<Step>& steps) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("rc", Napi::Number::New(env, out.rc));
  Napi::Array prvals = Napi::Array::New(env, out.prvals.size());
  Napi::Array results = Napi::Array::New(env, steps.size());
  for (uint32_t i = 0; i < steps.size(); i++) {
    prvals.Set(i, Napi::Number::New(env, out.prvals[i]));
    if (steps[i].kind == Step::kExec && !out.execOut[i].empty()) {
      results.Set(i, Napi::Buffer<char>::Copy(env, out.execOut[i].data(), out.execOut[i].size()));
    } else if (steps[i].kind == Step::kGetXattrs) {
      Napi::Object x = Napi::Object::New(env);
      for (auto& kv : out.xattrs[i]) x.Set(kv.first, Napi::Buffer<char>::Copy(env, kv.second.data(), kv.second.size()));
      results.Set(i, x);
    } else {
      results.Set(i, env.Null());
    }
  }
  o.Set("prvals", prvals);
  o.Set("results", results);
  return o;
}

}  // namespace

// Parses `steps` (info[1]) for object info[0], then runs `run(io, oid, steps, out)` (builds and
// performs the op, returns its rc) on a worker thread, resolving with OpResult.
template <typename Run>
Napi::Value Pool::CompoundOp(const Napi::CallbackInfo& info, bool write, const char* usage, const char* call,
                             Run run) {
  auto steps = std::make_shared<std::vector<Step>>();
  bool ok = info[0].IsString() && ParseSteps(info[1], write, steps.get());
  if (!Usage(info, ok, usage) || !Check(info)) return info.Env().Undefined();
  std::string oid = info[0].As<Napi::String>().Utf8Value();
  auto out = std::make_shared<OpOut>();
  rados_ioctx_t io = io_;
  return RunAsync(
      info.Env(), Value(), std::string(call) + " " + oid,
      [io, oid, steps, out, run]() -> int {
        size_t n = steps->size();
        out->prvals.assign(n, 0);
        out->execOut.assign(n, std::string());
        out->xattrs.assign(n, {});
        out->rc = run(io, oid, *steps, *out);
        return 0;
      },
      [out, steps](Napi::Env env) -> Napi::Value { return OpResult(env, *out, *steps); });
}

// writeOp(oid, steps) -> Promise<{rc, prvals, results}>: one rados_write_op_t with `steps` in
// order (cmpxattr, setxattr, rmxattr, exec, create; `failOk` lets a step fail without failing the
// op). Resolves also when the op failed: `rc` is then the negative errno (ECANCELED: a cmpxattr did
// not match) and `prvals` says which exec failed. Every buffer is copied before this returns.
Napi::Value Pool::WriteOp(const Napi::CallbackInfo& info) {
  return CompoundOp(info, true, "writeOp(oid, steps)", "rados_write_op_operate",
                    [](rados_ioctx_t io, const std::string& oid, const std::vector<Step>& steps, OpOut& out) {
                      rados_write_op_t op = rados_create_write_op();
                      if (op == nullptr) return -ENOMEM;
                      for (size_t i = 0; i < steps.size(); i++) {
                        const Step& s = steps[i];
                        const char* v = s.data.data();
                        if (s.kind == Step::kCmpXattr)
                          rados_write_op_cmpxattr(op, s.name.c_str(), LIBRADOS_CMPXATTR_OP_EQ, v, s.data.size());
                        else if (s.kind == Step::kSetXattr)
                          rados_write_op_setxattr(op, s.name.c_str(), v, s.data.size());
                        else if (s.kind == Step::kRmXattr)
                          rados_write_op_rmxattr(op, s.name.c_str());
                        else if (s.kind == Step::kExec)
                          rados_write_op_exec(op, s.name.c_str(), s.method.c_str(), v, s.data.size(), &out.prvals[i]);
                        else if (s.kind == Step::kCreate)
                          rados_write_op_create(
                              op, s.exclusive ? LIBRADOS_CREATE_EXCLUSIVE : LIBRADOS_CREATE_IDEMPOTENT, nullptr);
                        if (s.failOk) rados_write_op_set_flags(op, LIBRADOS_OP_FLAG_FAILOK);
                      }
                      int rc = rados_write_op_operate(op, io, oid.c_str(), nullptr, 0);
                      rados_release_write_op(op);
                      return rc;
                    });
}

// readOp(oid, steps) -> Promise<{rc, prvals, results}>: one rados_read_op_t (cmpxattr, exec,
// getxattrs), read as one snapshot of the object. `results[i]` is an exec's output Buffer, or a
// getxattrs' {name: Buffer}; `rc` is -ENOENT for a missing object.
Napi::Value Pool::ReadOp(const Napi::CallbackInfo& info) {
  return CompoundOp(
      info, false, "readOp(oid, steps)", "rados_read_op_operate",
      [](rados_ioctx_t io, const std::string& oid, const std::vector<Step>& steps, OpOut& out) {
        size_t n = steps.size();
        std::vector<char*> bufs(n, nullptr);
        std::vector<size_t> lens(n, 0);
        std::vector<rados_xattrs_iter_t> iters(n, nullptr);
        rados_read_op_t op = rados_create_read_op();
        if (op == nullptr) return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
          const Step& s = steps[i];
          if (s.kind == Step::kCmpXattr)
            rados_read_op_cmpxattr(op, s.name.c_str(), LIBRADOS_CMPXATTR_OP_EQ, s.data.data(), s.data.size());
          else if (s.kind == Step::kExec)
            rados_read_op_exec(op, s.name.c_str(), s.method.c_str(), s.data.data(), s.data.size(), &bufs[i],
                               &lens[i], &out.prvals[i]);
          else if (s.kind == Step::kGetXattrs)
            rados_read_op_getxattrs(op, &iters[i], &out.prvals[i]);
          if (s.failOk) rados_read_op_set_flags(op, LIBRADOS_OP_FLAG_FAILOK);
        }
        int rc = rados_read_op_operate(op, io, oid.c_str(), 0);
        rados_release_read_op(op);
        for (size_t i = 0; i < n; i++) {
          if (bufs[i] != nullptr) {
            out.execOut[i].assign(bufs[i], lens[i]);
            rados_buffer_free(bufs[i]);
          }
          if (iters[i] == nullptr) continue;
          const char* name = nullptr;
          const char* val = nullptr;
          size_t len = 0;
          while (rados_getxattrs_next(iters[i], &name, &val, &len) == 0 && name != nullptr)
            out.xattrs[i].emplace_back(name, std::string(val, len));
          rados_getxattrs_end(iters[i]);
        }
        return rc;
      });
}

}  // namespace archip
