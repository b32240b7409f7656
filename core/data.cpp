// Dataset loaders (IDX, CSV), the shared epoch order and the batch gather.
//
// Policy: a loader either returns a dataset that is exactly what the files say, or throws a
// DataError naming the file and the problem. Nothing is silently repaired: trailing bytes,
// truncated gzip members and corrupt CRCs are errors, because a quietly shortened or
// padded dataset would make throughput and accuracy figures incomparable between runs.
#include "nnpar/data.hpp"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>

namespace nnpar {
namespace {

// Guards against corrupt headers asking for absurd allocations before we have read the data.
constexpr int kMaxSide = 4096;
constexpr std::uint64_t kMaxBytes = std::uint64_t{16} << 30;  // 16 GiB of pixels
constexpr std::size_t kChunk = std::size_t{1} << 20;          // 1 MiB reads keep syscalls rare

std::string hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

[[noreturn]] void fail(const std::filesystem::path& file, const std::string& what) {
  throw DataError(file.string() + ": " + what);
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// A byte stream over a raw or gzip'd file; the format is chosen by the gzip magic (1f 8b),
// not by the file name, so renamed or decompressed copies keep working.
//
// We drive inflate() ourselves instead of gzread(): gzread() reports a truncated stream only
// through gzerror() after returning the partial data (Z_BUF_ERROR is not treated as a
// failure), which makes it easy to accept a cut-off download as a shorter dataset.
class ByteSource {
 public:
  explicit ByteSource(std::filesystem::path path) : path_(std::move(path)) {
    std::error_code ec;
    if (!std::filesystem::exists(path_, ec)) fail(path_, "no such file");
    if (std::filesystem::is_directory(path_, ec)) fail(path_, "is a directory, not a file");
    file_.reset(std::fopen(path_.c_str(), "rb"));
    if (!file_) fail(path_, std::string("cannot open: ") + std::strerror(errno));
    in_.resize(kChunk);
    fill_input();
    if (in_len_ == 0) fail(path_, "file is empty");
    gzip_ = in_len_ >= 2 && in_[0] == 0x1f && in_[1] == 0x8b;
    if (gzip_) {
      std::memset(&zs_, 0, sizeof zs_);
      // 15 + 16: gzip wrapper only; a zlib or raw deflate stream is not what we expect here.
      if (inflateInit2(&zs_, 15 + 16) != Z_OK) fail(path_, "cannot initialise zlib");
      zs_init_ = true;
      zs_.next_in = in_.data();
      zs_.avail_in = static_cast<uInt>(in_len_);
    }
  }
  ~ByteSource() {
    if (zs_init_) inflateEnd(&zs_);
  }
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  bool gzip() const { return gzip_; }
  const std::filesystem::path& path() const { return path_; }

  // Reads up to n bytes; fewer only at the end of the data. Throws on I/O or gzip errors.
  std::size_t read(std::uint8_t* dst, std::size_t n) {
    return gzip_ ? read_gzip(dst, n) : read_raw(dst, n);
  }

  // Reads and discards the rest, returning how many bytes there were (stops counting past
  // `cap`). Draining a gzip stream to its end also verifies its CRC and length trailer.
  std::uint64_t drain(std::uint64_t cap) {
    std::array<std::uint8_t, 65536> tmp;
    std::uint64_t total = 0;
    while (total <= cap) {
      std::size_t got = read(tmp.data(), tmp.size());
      if (got == 0) break;
      total += got;
    }
    return total;
  }

 private:
  void fill_input() {
    in_len_ = std::fread(in_.data(), 1, in_.size(), file_.get());
    if (in_len_ < in_.size() && std::ferror(file_.get()))
      fail(path_, std::string("read error: ") + std::strerror(errno));
    compressed_read_ += in_len_;
  }

  std::size_t read_raw(std::uint8_t* dst, std::size_t n) {
    std::size_t done = 0;
    // Serve what the magic sniff already buffered, then read straight into dst.
    if (in_pos_ < in_len_) {
      std::size_t k = std::min(n, in_len_ - in_pos_);
      std::memcpy(dst, in_.data() + in_pos_, k);
      in_pos_ += k;
      done = k;
    }
    if (done < n) {
      std::size_t k = std::fread(dst + done, 1, n - done, file_.get());
      if (k < n - done && std::ferror(file_.get()))
        fail(path_, std::string("read error: ") + std::strerror(errno));
      done += k;
    }
    return done;
  }

  std::size_t read_gzip(std::uint8_t* dst, std::size_t n) {
    std::size_t done = 0;
    while (done < n && !finished_) {
      if (zs_.avail_in == 0) {
        fill_input();
        zs_.next_in = in_.data();
        zs_.avail_in = static_cast<uInt>(in_len_);
      }
      if (zs_.avail_in == 0) {
        // Out of file in the middle of a member: the classic cut-off download.
        fail(path_, "truncated gzip stream: unexpected end of file after " +
                        std::to_string(compressed_read_) + " compressed bytes (" +
                        std::to_string(total_out_ + done) + " bytes decompressed)");
      }
      std::size_t want = std::min<std::size_t>(n - done, std::numeric_limits<uInt>::max());
      zs_.next_out = dst + done;
      zs_.avail_out = static_cast<uInt>(want);
      int rc = inflate(&zs_, Z_NO_FLUSH);
      done += want - zs_.avail_out;
      if (rc == Z_STREAM_END) {
        // gzip allows concatenated members (e.g. `cat a.gz b.gz`); anything else after a
        // member is garbage, which gzip(1) merely warns about but we refuse.
        if (zs_.avail_in == 0) {
          fill_input();
          zs_.next_in = in_.data();
          zs_.avail_in = static_cast<uInt>(in_len_);
        }
        if (zs_.avail_in == 0) {
          finished_ = true;
        } else if (zs_.next_in[0] == 0x1f) {
          // Possibly another member; inflate() itself rejects a bad second header byte.
          inflateReset(&zs_);
        } else {
          fail(path_, "trailing garbage after the gzip stream (" +
                          std::to_string(total_out_ + done) + " bytes decompressed)");
        }
      } else if (rc == Z_BUF_ERROR) {
        // No progress possible: either output is full (loop ends) or input is exhausted,
        // which the refill above turns into the truncation error.
        continue;
      } else if (rc != Z_OK) {
        std::string msg = zs_.msg ? zs_.msg : ("zlib error " + std::to_string(rc));
        fail(path_, "corrupt gzip stream: " + msg + " (after " +
                        std::to_string(total_out_ + done) + " bytes decompressed)");
      }
    }
    total_out_ += done;
    return done;
  }

  std::filesystem::path path_;
  FilePtr file_;
  std::vector<std::uint8_t> in_;
  std::size_t in_len_ = 0, in_pos_ = 0;
  std::uint64_t compressed_read_ = 0, total_out_ = 0;
  bool gzip_ = false, zs_init_ = false, finished_ = false;
  z_stream zs_{};
};

std::uint32_t be32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}

struct IdxFile {
  std::vector<std::uint32_t> dims;
  std::vector<std::uint8_t> data;
};

// Reads a whole unsigned-byte IDX file with exactly `ndims` dimensions.
IdxFile read_idx(const std::filesystem::path& path, int ndims, const char* kind) {
  ByteSource src(path);
  const std::uint32_t want_magic = 0x00000800u | static_cast<std::uint32_t>(ndims);
  std::uint8_t head[4];
  if (src.read(head, 4) < 4) fail(path, "file too short for an IDX header (fewer than 4 bytes)");
  const std::uint32_t magic = be32(head);
  if (magic != want_magic) {
    std::string msg = "wrong IDX magic: expected " + hex32(want_magic) + " (" + kind +
                      ") but found " + hex32(magic);
    if (head[0] == 0 && head[1] == 0 && head[2] == 0x08) {
      msg += " (unsigned-byte IDX with " + std::to_string(head[3]) + " dimensions, expected " +
             std::to_string(ndims);
      if (magic == 0x00000801u) msg += "; this looks like a labels file";
      if (magic == 0x00000803u) msg += "; this looks like an images file";
      msg += ")";
    } else if (head[0] == 0 && head[1] == 0) {
      msg += " (element type 0x" + hex32(head[2]).substr(8) + " is not unsigned byte 0x08)";
    }
    fail(path, msg);
  }
  IdxFile idx;
  std::uint64_t total = 1;
  for (int d = 0; d < ndims; ++d) {
    std::uint8_t b[4];
    if (src.read(b, 4) < 4)
      fail(path, "IDX header truncated: expected " + std::to_string(ndims) +
                     " dimension sizes after the magic");
    std::uint32_t v = be32(b);
    if (v == 0) fail(path, "dimension " + std::to_string(d) + " is zero");
    if (d > 0 && v > static_cast<std::uint32_t>(kMaxSide))
      fail(path, "dimension " + std::to_string(d) + " is " + std::to_string(v) +
                     ", more than the supported " + std::to_string(kMaxSide));
    if (d == 0 && v > std::numeric_limits<std::uint32_t>::max() - 1)
      fail(path, "sample count " + std::to_string(v) + " is too large");
    idx.dims.push_back(v);
    total *= v;
    if (total > kMaxBytes)
      fail(path, "header declares more than " + std::to_string(kMaxBytes >> 30) +
                     " GiB of data; the header is probably corrupt");
  }
  // Read in pieces that grow with what has arrived (1 MiB, then doubling up to 256 MiB), so a
  // corrupt count fails on the missing data having allocated at most twice what the file
  // really holds, instead of first committing up to 256 MiB for a 20-byte file (found by
  // fuzzing: tests/fuzz/fuzz_idx.cpp).
  constexpr std::size_t kMaxPiece = std::size_t{256} << 20;
  std::size_t have = 0;
  while (have < total) {
    const std::size_t grow = std::clamp(have, kChunk, kMaxPiece);
    std::size_t piece = static_cast<std::size_t>(std::min<std::uint64_t>(total - have, grow));
    idx.data.resize(have + piece);
    std::size_t got = src.read(idx.data.data() + have, piece);
    have += got;
    if (got < piece) {
      std::string per = ndims == 3 ? " (" + std::to_string(idx.dims[0]) + " images of " +
                                         std::to_string(idx.dims[1]) + "x" +
                                         std::to_string(idx.dims[2]) + ")"
                                   : " (" + std::to_string(idx.dims[0]) + " labels)";
      fail(path, "data shorter than the header says: expected " + std::to_string(total) +
                     " bytes" + per + " but found only " + std::to_string(have));
    }
  }
  const std::uint64_t extra = src.drain(std::uint64_t{1} << 30);
  if (extra > 0)
    fail(path, std::to_string(extra) + " trailing bytes after the " + std::to_string(total) +
                   " data bytes the header declares");
  return idx;
}

void check_options(const std::filesystem::path& file, const DataOptions& o) {
  if (o.num_classes <= 0)
    fail(file, "invalid options: num_classes must be positive, got " +
                   std::to_string(o.num_classes));
}

// EMNIST stores each image as its transpose; swapping rows and columns makes it upright.
void transpose_images(std::vector<std::uint8_t>& px, std::size_t count, int rows, int cols) {
  const std::size_t f = static_cast<std::size_t>(rows) * cols;
  std::vector<std::uint8_t> tmp(f);
  for (std::size_t i = 0; i < count; ++i) {
    std::uint8_t* img = px.data() + i * f;
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) tmp[static_cast<std::size_t>(c) * rows + r] = img[r * cols + c];
    std::memcpy(img, tmp.data(), f);
  }
}

void finish(Dataset& d, const DataOptions& o, int stored_rows, int stored_cols) {
  d.num_classes = o.num_classes;
  d.pixel_scale = o.normalize ? 1.0f / 255.0f : 1.0f;
  if (o.transpose) {
    transpose_images(d.pixels, d.count, stored_rows, stored_cols);
    d.rows = stored_cols;
    d.cols = stored_rows;
  } else {
    d.rows = stored_rows;
    d.cols = stored_cols;
  }
}

std::string describe_options(const DataOptions& o, std::size_t count) {
  std::string s;
  if (o.limit) s += " [first " + std::to_string(count) + "]";
  if (o.transpose) s += " [transposed]";
  return s;
}

}  // namespace

Dataset load_idx(const std::filesystem::path& images, const std::filesystem::path& labels,
                 const DataOptions& options) {
  check_options(images, options);
  IdxFile img = read_idx(images, 3, "images");
  IdxFile lab = read_idx(labels, 1, "labels");
  if (img.dims[0] != lab.dims[0])
    throw DataError("image/label count mismatch: " + images.string() + " has " +
                    std::to_string(img.dims[0]) + " images but " + labels.string() + " has " +
                    std::to_string(lab.dims[0]) + " labels");

  const std::size_t n_all = img.dims[0];
  const int rows = static_cast<int>(img.dims[1]), cols = static_cast<int>(img.dims[2]);
  const std::size_t f = static_cast<std::size_t>(rows) * cols;
  const int off = options.label_offset;
  // Every label is checked, not only the kept ones, so a corrupt file fails the same way
  // whatever `limit` is.
  for (std::size_t i = 0; i < n_all; ++i) {
    const int stored = lab.data[i];
    const int v = stored - off;
    if (v < 0 || v >= options.num_classes)
      fail(labels, "label out of range at sample " + std::to_string(i) + ": stored label " +
                       std::to_string(stored) + " minus label_offset " + std::to_string(off) +
                       " is " + std::to_string(v) + "; valid stored labels are " +
                       std::to_string(off) + ".." + std::to_string(off + options.num_classes - 1));
  }

  Dataset d;
  d.count = options.limit ? std::min(options.limit, n_all) : n_all;
  d.pixels = std::move(img.data);
  d.pixels.resize(d.count * f);
  if (d.count < n_all) d.pixels.shrink_to_fit();
  d.labels.resize(d.count);
  for (std::size_t i = 0; i < d.count; ++i) d.labels[i] = lab.data[i] - off;
  finish(d, options, rows, cols);
  d.source = images.string() + " + " + labels.string() + describe_options(options, d.count);
  return d;
}

Dataset load_csv(const std::filesystem::path& file, const DataOptions& options, int rows,
                 int cols) {
  check_options(file, options);
  if (rows <= 0 || cols <= 0 || rows > kMaxSide || cols > kMaxSide)
    fail(file, "invalid image size " + std::to_string(rows) + "x" + std::to_string(cols));
  // Whole-file read (gzip'd CSV works too): CSV is for small hand-made sets, and a single
  // buffer lets from_chars parse without per-line allocations.
  std::string text;
  {
    ByteSource src(file);
    std::vector<std::uint8_t> buf(kChunk);
    for (;;) {
      std::size_t got = src.read(buf.data(), buf.size());
      if (got == 0) break;
      text.append(reinterpret_cast<const char*>(buf.data()), got);
    }
  }
  const std::size_t f = static_cast<std::size_t>(rows) * cols;
  const std::size_t expect = f + 1;
  const int off = options.label_offset;
  Dataset d;
  std::vector<int> vals;
  vals.reserve(expect);
  std::size_t pos = 0, line_no = 0;
  bool first_content_line = true;
  const auto where = [&](std::size_t ln) { return "line " + std::to_string(ln); };
  while (pos < text.size() && !(options.limit && d.count >= options.limit)) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;

    vals.clear();
    std::size_t field = 0, p = 0;
    bool header = false;
    for (;;) {
      std::size_t comma = line.find(',', p);
      std::string_view tok = line.substr(p, comma == std::string_view::npos ? line.npos : comma - p);
      while (!tok.empty() && (tok.front() == ' ' || tok.front() == '\t')) tok.remove_prefix(1);
      while (!tok.empty() && (tok.back() == ' ' || tok.back() == '\t')) tok.remove_suffix(1);
      ++field;
      int v = 0;
      auto [end, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), v);
      if (tok.empty() || ec != std::errc() || end != tok.data() + tok.size()) {
        if (first_content_line && field == 1 && !tok.empty() && ec == std::errc::invalid_argument) {
          header = true;  // e.g. "label,pixel0,..."
          break;
        }
        fail(file, where(line_no) + ", field " + std::to_string(field) + ": '" +
                       std::string(tok.substr(0, 32)) + "' is " +
                       (ec == std::errc::result_out_of_range ? "out of range" : "not an integer"));
      }
      if (field > 1 && (v < 0 || v > 255))
        fail(file, where(line_no) + ", field " + std::to_string(field) + ": pixel value " +
                       std::to_string(v) + " is outside 0..255");
      vals.push_back(v);
      if (comma == std::string_view::npos) break;
      p = comma + 1;
    }
    first_content_line = false;
    if (header) continue;
    if (vals.size() != expect)
      fail(file, where(line_no) + ": expected " + std::to_string(expect) + " values (label + " +
                     std::to_string(rows) + "x" + std::to_string(cols) + " pixels), found " +
                     std::to_string(vals.size()));
    const int label = vals[0] - off;
    if (label < 0 || label >= options.num_classes)
      fail(file, where(line_no) + ": label " + std::to_string(vals[0]) + " minus label_offset " +
                     std::to_string(off) + " is " + std::to_string(label) +
                     "; valid labels are " + std::to_string(off) + ".." +
                     std::to_string(off + options.num_classes - 1));
    d.labels.push_back(label);
    for (std::size_t k = 1; k < expect; ++k) d.pixels.push_back(static_cast<std::uint8_t>(vals[k]));
    ++d.count;
  }
  if (d.count == 0) fail(file, "no samples");
  finish(d, options, rows, cols);
  d.source = file.string() + describe_options(options, d.count);
  return d;
}

namespace {

// SplitMix64 (Steele, Lea, Flood 2014): turns (seed, epoch) into well-spread generator state
// even for seeds like 0, 1, 2 that differ in a single bit.
std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// xoshiro256** (Blackman, Vigna): fast, and defined by integer ops only, so every platform
// and standard library produces the same stream (unlike std::shuffle/uniform_int_distribution).
class Xoshiro256 {
 public:
  explicit Xoshiro256(std::uint64_t seed) {
    for (auto& w : s_) w = splitmix64(seed);
  }
  std::uint64_t next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, range) without modulo bias: Lemire's multiply-shift with rejection
  // ("Fast Random Integer Generation in an Interval", 2019).
  std::uint32_t bounded(std::uint32_t range) {
    std::uint64_t m = std::uint64_t{static_cast<std::uint32_t>(next() >> 32)} * range;
    auto low = static_cast<std::uint32_t>(m);
    if (low < range) {
      const std::uint32_t threshold = static_cast<std::uint32_t>(-range) % range;
      while (low < threshold) {
        m = std::uint64_t{static_cast<std::uint32_t>(next() >> 32)} * range;
        low = static_cast<std::uint32_t>(m);
      }
    }
    return static_cast<std::uint32_t>(m >> 32);
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4];
};

}  // namespace

std::vector<std::uint32_t> epoch_order(std::size_t n, std::uint64_t seed, int epoch, bool shuffle) {
  if (n > std::numeric_limits<std::uint32_t>::max())
    throw std::length_error("epoch_order: " + std::to_string(n) +
                            " samples do not fit 32-bit indices");
  std::vector<std::uint32_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = static_cast<std::uint32_t>(i);
  if (!shuffle || n < 2) return order;
  // Seed and epoch are each hashed before combining so that (seed, epoch) and
  // (seed + 1, epoch - 1) style neighbours do not collide.
  std::uint64_t a = seed, b = static_cast<std::uint64_t>(static_cast<std::int64_t>(epoch)) ^
                              0xD1B54A32D192ED03ull;
  const std::uint64_t key = splitmix64(a) ^ (splitmix64(b) * 0x9E3779B97F4A7C15ull);
  Xoshiro256 rng(key);
  for (std::size_t i = n - 1; i > 0; --i) {
    const std::uint32_t j = rng.bounded(static_cast<std::uint32_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

Range shard_range(std::size_t n, int rank, int world) {
  if (world <= 0 || rank < 0 || rank >= world)
    throw std::invalid_argument("shard_range: rank " + std::to_string(rank) +
                                " is not in a world of " + std::to_string(world));
  const auto w = static_cast<std::size_t>(world), r = static_cast<std::size_t>(rank);
  const std::size_t base = n / w, extra = n % w;
  Range out;
  out.begin = r * base + std::min(r, extra);
  out.end = out.begin + base + (r < extra ? 1 : 0);
  return out;
}

void gather_batch(const Dataset& data, std::span<const std::uint32_t> order, float* x,
                  std::int32_t* y) {
  const std::size_t f = static_cast<std::size_t>(data.features());
  const float scale = data.pixel_scale;
  const std::uint8_t* base = data.pixels.data();
  for (std::size_t i = 0; i < order.size(); ++i) {
    const std::uint32_t j = order[i];
    if (j >= data.count)
      throw std::out_of_range("gather_batch: sample " + std::to_string(j) + " of a dataset of " +
                              std::to_string(data.count));
    const std::uint8_t* __restrict src = base + static_cast<std::size_t>(j) * f;
    float* __restrict dst = x + i * f;
    // Plain indexed loop over restrict pointers: GCC/Clang turn it into widen+convert+mul
    // SIMD; a per-pixel lookup table would defeat the vectoriser.
    for (std::size_t k = 0; k < f; ++k) dst[k] = static_cast<float>(src[k]) * scale;
    y[i] = data.labels[j];
  }
}

}  // namespace nnpar
