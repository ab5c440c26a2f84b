// io.cpp: torch `.pt` files. Writing goes through libtorch's own pickler (torch::pickle_save), which produces the zip
// format (`archive/data.pkl` + one file per storage) that Python's torch.load reads, so exported backbones load
// anywhere PyTorch runs. Reading official checkpoints is done in TypeScript (src/torch/pt_file.ts) with an allow-list
// unpickler, because libtorch's unpickler cannot build the `argparse.Namespace` they carry; it needs only
// dc_as_strided from here, to rebuild a tensor from its storage, offset, sizes and strides.
#include <torch/csrc/jit/serialization/pickle.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#include "common.h"

namespace {

// Writes all of `data` to fd, retrying short writes and EINTR.
void write_all(int fd, const char* data, size_t size, const std::string& path) {
  size_t written = 0;
  while (written < size) {
    ssize_t n = ::write(fd, data + written, size - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error("save_pt: writing " + path + " failed: " + std::strerror(errno));
    }
    written += static_cast<size_t>(n);
  }
}

// Best effort: makes the rename durable; not every file system lets a directory be opened for fsync.
void sync_parent(const std::string& path) {
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// A tensor pickle_save can write as its own storage: detached, on the CPU (so torch.load needs no map_location),
// contiguous and owning exactly its bytes (the pickler writes a tensor's whole storage).
at::Tensor standalone(const at::Tensor& t) {
  at::Tensor out = t.detach().to(at::kCPU).contiguous();
  const auto bytes = static_cast<size_t>(out.numel()) * out.element_size();
  if (out.storage_offset() != 0 || out.storage().nbytes() != bytes) out = out.clone();
  return out;
}

}  // namespace

int32_t dc_save_pt(const char* path, const char* names, int64_t names_nbytes, const dc_tensor* tensors, int64_t n) {
  DC_GUARD_BEGIN
  if (path == nullptr || path[0] == '\0') throw std::invalid_argument("save_pt: empty path");
  if (names_nbytes < 0 || (names_nbytes > 0 && names == nullptr)) throw std::invalid_argument("save_pt: bad names");
  auto values = dc::tensor_list(tensors, n);
  // names: n NUL-terminated UTF-8 strings back to back.
  std::vector<std::string> keys;
  keys.reserve(values.size());
  int64_t at = 0;
  for (int64_t i = 0; i < n; ++i) {
    const char* begin = names + at;
    const void* end = at < names_nbytes ? std::memchr(begin, '\0', static_cast<size_t>(names_nbytes - at)) : nullptr;
    if (end == nullptr) {
      throw std::invalid_argument("save_pt: names hold fewer than " + std::to_string(n) + " NUL-terminated strings");
    }
    keys.emplace_back(begin, static_cast<const char*>(end));
    at += static_cast<int64_t>(keys.back().size()) + 1;
  }
  if (at != names_nbytes) throw std::invalid_argument("save_pt: names hold more than " + std::to_string(n) + " strings");

  c10::Dict<std::string, at::Tensor> dict;
  for (size_t i = 0; i < values.size(); ++i) {
    if (dict.contains(keys[i])) throw std::invalid_argument("save_pt: duplicate key '" + keys[i] + "'");
    dict.insert(keys[i], standalone(values[i]));
  }
  const std::vector<char> bytes = torch::jit::pickle_save(c10::IValue(dict));

  // Atomic: the data goes to <path>.tmp-<pid>, is fsynced, then renamed over path.
  const std::string target(path);
  const std::string tmp = target + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("save_pt: cannot create " + tmp + ": " + std::strerror(errno));
  try {
    write_all(fd, bytes.data(), bytes.size(), tmp);
    if (::fsync(fd) != 0) throw std::runtime_error("save_pt: fsync of " + tmp + " failed: " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw std::runtime_error("save_pt: closing " + tmp + " failed: " + std::strerror(errno));
  }
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw std::runtime_error("save_pt: renaming " + tmp + " to " + target + " failed: " + reason);
  }
  sync_parent(target);
  return 0;
  DC_GUARD_END(1)
}

dc_tensor dc_as_strided(dc_tensor t, const int64_t* size, int64_t ndim, const int64_t* stride, int64_t storage_offset) {
  DC_GUARD_BEGIN
  auto sizes = dc::int_list(size, ndim);
  auto strides = dc::int_list(stride, ndim);
  if (storage_offset < 0) throw std::invalid_argument("as_strided: negative storage offset");
  return dc::wrap(dc::unwrap(t).as_strided(sizes, strides, storage_offset));
  DC_GUARD_END(nullptr)
}
