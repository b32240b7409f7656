// safetensors checkpoints (https://github.com/huggingface/safetensors): 8-byte little-endian
// header length N, N bytes of JSON header, then the raw tensor bytes. Only F32 is written
// or accepted, which is all the MLP uses. Every malformed input is a CheckpointError that
// names the file and the problem: checkpoints come from other programs and other runs, so
// they are treated as untrusted input.
#include "nnpar/safetensors.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace nnpar {

// The tensor bytes are copied straight to and from float arrays.
static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian data; a big-endian host needs byte swapping");
static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559, "float must be IEEE binary32");

namespace {

using json = nlohmann::json;

// The reference implementation refuses headers above 100 MB; so do we, rather than trying
// to allocate whatever a corrupt length field says.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

[[noreturn]] void fail(const std::filesystem::path& file, const std::string& problem) {
  throw CheckpointError("checkpoint " + file.string() + ": " + problem);
}

std::string shape_string(const std::vector<std::size_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Element count of a shape, or false on overflow.
bool element_count(const std::vector<std::size_t>& shape, std::size_t& n) {
  n = 1;
  for (std::size_t d : shape) {
    if (d != 0 && n > std::numeric_limits<std::size_t>::max() / 4 / d) return false;
    n *= d;
  }
  return true;
}

// One entry of the header, checked against the size of the data section.
struct HeaderEntry {
  std::string name;
  std::vector<std::size_t> shape;
  std::size_t begin = 0, end = 0;  // byte offsets into the data section
};

struct ParsedFile {
  std::vector<char> bytes;
  std::size_t data_start = 0;
  std::vector<HeaderEntry> entries;  // sorted by name (the JSON object is a sorted map)
};

ParsedFile parse_file(const std::filesystem::path& file) {
  ParsedFile parsed;
  std::ifstream in(file, std::ios::binary);
  if (!in) fail(file, std::string("cannot open for reading: ") + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  if (size < 0) fail(file, "cannot determine the file size");
  parsed.bytes.resize(std::size_t(size));
  if (size > 0 && !in.read(parsed.bytes.data(), size)) fail(file, "read error");
  const std::size_t file_size = parsed.bytes.size();

  if (file_size < 8) {
    fail(file, "file is shorter than 8 bytes (" + std::to_string(file_size) +
                   " bytes), not a safetensors file");
  }
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, parsed.bytes.data(), 8);
  if (header_len > file_size - 8) {
    fail(file, "header length " + std::to_string(header_len) + " is larger than the file (" +
                   std::to_string(file_size) + " bytes): not a safetensors file, or a truncated one");
  }
  if (header_len > kMaxHeaderBytes) {
    fail(file, "header length " + std::to_string(header_len) + " exceeds the 100 MB limit");
  }
  parsed.data_start = 8 + std::size_t(header_len);
  const std::size_t data_size = file_size - parsed.data_start;

  json header;
  try {
    header = json::parse(parsed.bytes.begin() + 8, parsed.bytes.begin() + parsed.data_start);
  } catch (const json::exception& e) {
    // Not only parse_error: a number too large for a double is out_of_range (found by
    // fuzzing: tests/fuzz/regressions/fuzz_safetensors/number-overflow).
    fail(file, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(file, "header is not a JSON object");

  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) fail(file, "__metadata__ is not a JSON object");
      for (const auto& [key, value] : info.items()) {
        if (!value.is_string()) fail(file, "__metadata__ value of \"" + key + "\" is not a string");
      }
      continue;
    }
    const std::string where = "tensor " + name + ": ";
    if (!info.is_object()) fail(file, where + "entry is not a JSON object");
    if (!info.contains("dtype") || !info["dtype"].is_string()) fail(file, where + "missing dtype");
    const std::string dtype = info["dtype"].get<std::string>();
    if (dtype != "F32") fail(file, where + "dtype " + dtype + " is not supported (only F32)");

    HeaderEntry entry;
    entry.name = name;
    if (!info.contains("shape") || !info["shape"].is_array()) fail(file, where + "missing shape");
    for (const auto& d : info["shape"]) {
      if (!d.is_number_unsigned()) fail(file, where + "shape " + info["shape"].dump() + " is not a list of non-negative integers");
      entry.shape.push_back(d.get<std::size_t>());
    }
    if (!info.contains("data_offsets") || !info["data_offsets"].is_array() ||
        info["data_offsets"].size() != 2 || !info["data_offsets"][0].is_number_unsigned() ||
        !info["data_offsets"][1].is_number_unsigned()) {
      fail(file, where + "data_offsets must be two non-negative integers");
    }
    const std::uint64_t begin = info["data_offsets"][0].get<std::uint64_t>();
    const std::uint64_t end = info["data_offsets"][1].get<std::uint64_t>();
    const std::string offsets = "[" + std::to_string(begin) + "," + std::to_string(end) + "]";
    if (begin > end || end > data_size) {
      fail(file, where + "data_offsets " + offsets + " out of range (the data section has " +
                     std::to_string(data_size) + " bytes)");
    }
    std::size_t n = 0;
    if (!element_count(entry.shape, n)) fail(file, where + "shape " + shape_string(entry.shape) + " is too large");
    if (end - begin != n * sizeof(float)) {
      fail(file, where + "data_offsets " + offsets + " hold " + std::to_string(end - begin) +
                     " bytes, but shape " + shape_string(entry.shape) + " of F32 needs " +
                     std::to_string(n * sizeof(float)));
    }
    entry.begin = std::size_t(begin);
    entry.end = std::size_t(end);
    parsed.entries.push_back(std::move(entry));
  }
  return parsed;
}

// write() until everything is out; short writes are legal for regular files too.
bool write_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += w;
    n -= std::size_t(w);
  }
  return true;
}

}  // namespace

void write_safetensors(const std::filesystem::path& file,
                       const std::map<std::string, NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Header first: tensors in name order (std::map), each right after the previous.
  json header = json::object();
  std::size_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") fail(file, "\"__metadata__\" is reserved and cannot name a tensor");
    std::size_t n = 0;
    if (!element_count(tensor.shape, n) || n != tensor.values.size()) {
      fail(file, "tensor " + name + ": shape " + shape_string(tensor.shape) + " does not match its " +
                     std::to_string(tensor.values.size()) + " values");
    }
    header[name] = {{"dtype", "F32"},
                    {"shape", tensor.shape},
                    {"data_offsets", {offset, offset + n * sizeof(float)}}};
    offset += n * sizeof(float);
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string header_text = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  const std::uint64_t header_len = header_text.size();

  // Temp file in the same folder, so the final rename() is atomic on the same file system:
  // a reader (or a crash) sees either the old checkpoint or the complete new one.
  static std::atomic<unsigned> counter{0};
  const std::filesystem::path dir = file.has_parent_path() ? file.parent_path() : std::filesystem::path(".");
  // (Built with += : GCC 12 warns falsely (-Wrestrict) on "." + std::string.)
  std::string tmp_name = ".";
  tmp_name += file.filename().string();
  tmp_name += ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  const std::filesystem::path tmp = dir / tmp_name;

  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) fail(file, "cannot create temporary file " + tmp.string() + ": " + std::strerror(errno));
  auto abandon = [&](const std::string& what) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    fail(file, what + ": " + std::strerror(err));
  };
  char len_bytes[8];
  std::memcpy(len_bytes, &header_len, 8);
  if (!write_all(fd, len_bytes, 8) || !write_all(fd, header_text.data(), header_text.size())) {
    abandon("write failed");
  }
  for (const auto& [name, tensor] : tensors) {
    if (!write_all(fd, reinterpret_cast<const char*>(tensor.values.data()),
                   tensor.values.size() * sizeof(float))) {
      abandon("write failed");
    }
  }
  if (::fsync(fd) != 0) abandon("fsync failed");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(file, std::string("close failed: ") + std::strerror(err));
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(file, std::string("rename from temporary file failed: ") + std::strerror(err));
  }
  // Make the rename itself durable. Best effort: some file systems refuse fsync on folders.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::map<std::string, NamedTensor> read_safetensors(const std::filesystem::path& file) {
  const ParsedFile parsed = parse_file(file);
  std::map<std::string, NamedTensor> tensors;
  for (const HeaderEntry& e : parsed.entries) {
    NamedTensor t;
    t.shape = e.shape;
    t.values.resize((e.end - e.begin) / sizeof(float));
    if (!t.values.empty()) {
      std::memcpy(t.values.data(), parsed.bytes.data() + parsed.data_start + e.begin, e.end - e.begin);
    }
    tensors.emplace(e.name, std::move(t));
  }
  return tensors;
}

void save_checkpoint(const std::filesystem::path& file, const ModelSpec& spec,
                     std::span<const float> params,
                     const std::map<std::string, std::string>& metadata) {
  const std::vector<ParameterSlice> layout = parameter_layout(spec);
  if (params.size() != parameter_count(spec)) {
    fail(file, "parameter buffer has " + std::to_string(params.size()) + " floats, the model needs " +
                   std::to_string(parameter_count(spec)));
  }
  std::map<std::string, NamedTensor> tensors;
  for (const ParameterSlice& s : layout) {
    const float* p = params.data() + s.offset;
    tensors[s.name] = NamedTensor{s.shape, std::vector<float>(p, p + s.size())};
  }
  write_safetensors(file, tensors, metadata);
}

void load_checkpoint(const std::filesystem::path& file, const ModelSpec& spec,
                     std::span<float> params) {
  const std::vector<ParameterSlice> layout = parameter_layout(spec);
  if (params.size() != parameter_count(spec)) {
    fail(file, "parameter buffer has " + std::to_string(params.size()) + " floats, the model needs " +
                   std::to_string(parameter_count(spec)));
  }
  const std::map<std::string, NamedTensor> tensors = read_safetensors(file);
  // Check everything before copying anything, so a bad checkpoint leaves params untouched.
  std::set<std::string> expected;
  for (const ParameterSlice& s : layout) {
    expected.insert(s.name);
    const auto it = tensors.find(s.name);
    if (it == tensors.end()) fail(file, "missing tensor " + s.name);
    if (it->second.shape != s.shape) {
      fail(file, s.name + ": shape " + shape_string(it->second.shape) +
                     " in checkpoint, model expects " + shape_string(s.shape));
    }
  }
  for (const auto& [name, tensor] : tensors) {
    if (!expected.count(name)) {
      fail(file, "unexpected tensor " + name + " (the model has " +
                     std::to_string(spec.linear_count()) + " Linear layers)");
    }
  }
  for (const ParameterSlice& s : layout) {
    const std::vector<float>& v = tensors.at(s.name).values;
    std::copy(v.begin(), v.end(), params.begin() + std::ptrdiff_t(s.offset));
  }
}

std::vector<int> checkpoint_layer_sizes(const std::filesystem::path& file) {
  const ParsedFile parsed = parse_file(file);
  std::map<std::string, const HeaderEntry*> by_name;
  for (const HeaderEntry& e : parsed.entries) by_name[e.name] = &e;

  std::vector<int> sizes;
  for (int i = 0;; ++i) {
    const std::string name = "layers." + std::to_string(i) + ".weight";
    const auto it = by_name.find(name);
    if (it == by_name.end()) break;
    const std::vector<std::size_t>& shape = it->second->shape;
    if (shape.size() != 2 || shape[0] < 1 || shape[1] < 1 ||
        shape[0] > std::size_t(std::numeric_limits<int>::max()) ||
        shape[1] > std::size_t(std::numeric_limits<int>::max())) {
      fail(file, name + ": shape " + shape_string(shape) + " is not a [out,in] weight matrix");
    }
    if (i == 0) {
      sizes.push_back(int(shape[1]));
    } else if (shape[1] != std::size_t(sizes.back())) {
      fail(file, name + ": shape " + shape_string(shape) + " takes " + std::to_string(shape[1]) +
                     " inputs, but layers." + std::to_string(i - 1) + " has " +
                     std::to_string(sizes.back()) + " outputs");
    }
    sizes.push_back(int(shape[0]));
  }
  if (sizes.empty()) fail(file, "no layers.0.weight tensor: not an nnpar MLP checkpoint");
  return sizes;
}

}  // namespace nnpar
