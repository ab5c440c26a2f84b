// data.cpp: the native half of the data pipeline. A loader owns a pool of std::thread workers that read encoded
// images (a whole file, a byte range of one such as a tar member, or a zip member found through its local header and
// inflated with zlib when deflated), decode them (JPEG through the TurboJPEG API with DCT down-scaling, PNG through
// libpng, WebP through libwebp) to RGB8, and write the official augmentation (docs/data.md#image-transforms) or the
// eval transform as normalized float32 (B, 3, S, S) views.
//
// Three promises shape the code:
// - Parity: every image operation reproduces what torchvision does on a PIL image (Pillow 9's fixed-point resampling,
//   ImageEnhance blends, HSV round trip, box-blur approximation of GaussianBlur, ImageOps.solarize, ToTensor and
//   Normalize in float32), so a model trained here sees the official pixels. Only the random numbers differ:
//   they come from our own counter-based streams instead of torch's global generator.
// - Determinism: a sample's random stream is a pure function of (seed, rank, epoch, sample index, view), never of
//   which worker ran it or when; a batch slot is filled by the first decodable candidate of its chain.
// - Bad input never crashes or hangs: every candidate gets a status code (missing, corrupt, truncated, too many
//   pixels, a zip member failing its size or CRC-32, ...), decoders report errors as values (libpng's longjmp is
//   confined to one C-style function), the pixel limit is checked on the header before anything is allocated, and
//   no exception leaves a worker.
#include <fcntl.h>
#include <png.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>
#include <webp/decode.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <csetjmp>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common.h"

namespace dc::data {

// ---- status codes and configuration (the numbers are the header's DC_IMG_* and DC_CFG_*) -------------------------

enum Status : int32_t {
  kOk = DC_IMG_OK,
  kMissing = DC_IMG_MISSING,
  kUnreadable = DC_IMG_UNREADABLE,
  kEmpty = DC_IMG_EMPTY,
  kUnsupported = DC_IMG_UNSUPPORTED,
  kTooLarge = DC_IMG_TOO_LARGE,
  kCorrupt = DC_IMG_CORRUPT,
  kTruncated = DC_IMG_TRUNCATED,
  kFailed = DC_IMG_FAILED,
  kMemberCorrupt = DC_IMG_MEMBER_CORRUPT,
};

const char* status_name(int32_t status) {
  switch (status) {
    case kOk: return "ok";
    case kMissing: return "missing";
    case kUnreadable: return "unreadable";
    case kEmpty: return "empty";
    case kUnsupported: return "unsupported";
    case kTooLarge: return "too_large";
    case kCorrupt: return "corrupt";
    case kTruncated: return "truncated";
    case kMemberCorrupt: return "member_corrupt";
    default: return "failed";
  }
}

struct Config {
  int threads = 1;
  int size = 224;
  int mode = 0;  // 0 train (docs/data.md#image-transforms), 1 eval (resize shorter side, center crop)
  int views = 2;
  int64_t max_pixels = 0;
  int64_t max_bytes = 0;
  int alpha = 0;  // 0 drop alpha (PIL's convert("RGB")), 1 composite on black
  bool dct = true;
  bool pin = false;
  double scale[2], ratio[2];
  double jitter_p;
  // A [lo, hi] range per jitter op; lo == hi == identity (1, or 0 for hue) means "not used" (torchvision's None).
  double brightness[2], contrast[2], saturation[2], hue[2];
  double gray_p, blur_p, sigma[2], solarize_p, solarize_threshold;
  float mean[3], std[3];

  static Config parse(const double* v, int64_t n) {
    if (v == nullptr) throw std::invalid_argument("loader config is NULL");
    if (n < DC_CFG_COUNT) {
      throw std::invalid_argument("loader config has " + std::to_string(n) + " values, expected " +
                                  std::to_string(DC_CFG_COUNT));
    }
    auto integer = [&](int index, double lo, double hi, const char* name) -> int64_t {
      const double x = v[index];
      if (!(x >= lo && x <= hi) || std::floor(x) != x) {
        throw std::invalid_argument(std::string("loader config: ") + name + " must be an integer in [" +
                                    std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(x));
      }
      return static_cast<int64_t>(x);
    };
    auto real = [&](int index, double lo, double hi, const char* name) -> double {
      const double x = v[index];
      if (!(x >= lo && x <= hi)) {
        throw std::invalid_argument(std::string("loader config: ") + name + " must lie in [" + std::to_string(lo) +
                                    ", " + std::to_string(hi) + "], got " + std::to_string(x));
      }
      return x;
    };
    auto range = [&](int index, double lo, double hi, const char* name, double* out) {
      out[0] = real(index, lo, hi, name);
      out[1] = real(index + 1, lo, hi, name);
      if (out[0] > out[1]) throw std::invalid_argument(std::string("loader config: ") + name + " range is reversed");
    };
    Config c;
    c.threads = static_cast<int>(integer(DC_CFG_THREADS, 1, 256, "threads"));
    c.size = static_cast<int>(integer(DC_CFG_IMAGE_SIZE, 1, 8192, "image size"));
    c.mode = static_cast<int>(integer(DC_CFG_MODE, 0, 1, "mode"));
    c.views = static_cast<int>(integer(DC_CFG_VIEWS, 1, 2, "views"));
    c.max_pixels = integer(DC_CFG_MAX_PIXELS, 1, 1e15, "max pixels");
    c.max_bytes = integer(DC_CFG_MAX_BYTES, 1, 1e15, "max bytes");
    c.alpha = static_cast<int>(integer(DC_CFG_ALPHA, 0, 1, "alpha mode"));
    c.dct = integer(DC_CFG_DCT_SCALING, 0, 1, "dct scaling") != 0;
    c.pin = integer(DC_CFG_PIN, 0, 1, "pin") != 0;
    range(DC_CFG_SCALE_MIN, 1e-6, 1e6, "scale", c.scale);
    range(DC_CFG_RATIO_MIN, 1e-6, 1e6, "ratio", c.ratio);
    c.jitter_p = real(DC_CFG_JITTER_P, 0, 1, "jitter p");
    range(DC_CFG_BRIGHTNESS_MIN, 0, 1e6, "brightness", c.brightness);
    range(DC_CFG_CONTRAST_MIN, 0, 1e6, "contrast", c.contrast);
    range(DC_CFG_SATURATION_MIN, 0, 1e6, "saturation", c.saturation);
    range(DC_CFG_HUE_MIN, -0.5, 0.5, "hue", c.hue);
    c.gray_p = real(DC_CFG_GRAY_P, 0, 1, "grayscale p");
    c.blur_p = real(DC_CFG_BLUR_P, 0, 1, "blur p");
    range(DC_CFG_BLUR_SIGMA_MIN, 0, 1e3, "blur sigma", c.sigma);
    c.solarize_p = real(DC_CFG_SOLARIZE_P, 0, 1, "solarize p");
    c.solarize_threshold = real(DC_CFG_SOLARIZE_THRESHOLD, 0, 256, "solarize threshold");
    for (int k = 0; k < 3; ++k) {
      c.mean[k] = static_cast<float>(real(DC_CFG_MEAN_R + k, -1e6, 1e6, "mean"));
      c.std[k] = static_cast<float>(v[DC_CFG_STD_R + k]);
      if (!(c.std[k] > 0) || !std::isfinite(c.std[k])) throw std::invalid_argument("loader config: std must be > 0");
    }
    return c;
  }
};

// ---- random streams -----------------------------------------------------------------------------------------------

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The key of one view's stream: a hash chain over the tuple, so (seed, rank, epoch, index, view) and only that
// decides every random choice of the view.
inline uint64_t stream_key(uint64_t seed, int64_t rank, int64_t epoch, int64_t index, int view) {
  uint64_t h = splitmix64(seed ^ 0x6463446174614c64ULL);  // "dcDataLd"
  h = splitmix64(h ^ static_cast<uint64_t>(rank));
  h = splitmix64(h ^ static_cast<uint64_t>(epoch));
  h = splitmix64(h ^ static_cast<uint64_t>(index));
  return splitmix64(h ^ static_cast<uint64_t>(view));
}

// xoshiro256** seeded through splitmix64: fast, 256 bits of state, and a well-known reference implementation.
class Rng {
 public:
  explicit Rng(uint64_t key) {
    for (auto& word : s_) {
      key += 0x9e3779b97f4a7c15ULL;
      word = splitmix64(key);
    }
  }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n), unbiased (Lemire's multiply-and-reject).
  int64_t below(int64_t n) {
    if (n <= 1) return 0;
    const uint64_t range = static_cast<uint64_t>(n);
    const uint64_t threshold = (0 - range) % range;
    for (;;) {
      const unsigned __int128 m = static_cast<unsigned __int128>(next()) * range;
      if (static_cast<uint64_t>(m) >= threshold) return static_cast<int64_t>(m >> 64);
    }
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// ---- reading bytes ------------------------------------------------------------------------------------------------

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Reads exactly `length` bytes at `offset` into out.
Status pread_exact(int fd, int64_t offset, int64_t length, uint8_t* out) {
  int64_t done = 0;
  while (done < length) {
    const ssize_t got = ::pread(fd, out + done, static_cast<size_t>(length - done), offset + done);
    if (got < 0) {
      if (errno == EINTR) continue;
      return kUnreadable;
    }
    if (got == 0) return kTruncated;  // the file shrank under us
    done += got;
  }
  return kOk;
}

// One candidate as the header's DC_CAND_* fields describe it.
struct Candidate {
  int64_t offset, length, index, method, flags, size, crc;
  static Candidate at(const int64_t* c) {
    return {c[DC_CAND_OFFSET], c[DC_CAND_LENGTH], c[DC_CAND_INDEX], c[DC_CAND_METHOD],
            c[DC_CAND_FLAGS],  c[DC_CAND_SIZE],   c[DC_CAND_CRC32]};
  }
};

inline uint32_t le16(const uint8_t* p) { return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8); }
inline uint32_t le32(const uint8_t* p) { return le16(p) | (le16(p + 2) << 16); }

// Inflates a raw deflate stream (zip's method 8). With a known size the output must be exactly that long (one spare
// byte catches a stream that runs longer); without one it grows up to max_bytes. Every failure of the stream itself
// is a corrupt member; only an allocation failure escapes (as std::bad_alloc, counted as failed by the worker).
Status inflate_raw(const std::vector<uint8_t>& in, int64_t size, int64_t max_bytes, std::vector<uint8_t>& out) {
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) throw std::bad_alloc();
  struct End {
    z_stream* z;
    ~End() { inflateEnd(z); }
  } end{&z};
  const int64_t limit = max_bytes + 1;
  int64_t capacity = size >= 0 ? size + 1 : std::min<int64_t>(limit, std::max<int64_t>(65536, 4 * in.size()));
  out.resize(static_cast<size_t>(capacity));
  z.next_in = const_cast<Bytef*>(in.data());
  int64_t fed = 0;
  for (;;) {
    // avail_in and avail_out are 32-bit: feed and drain in chunks.
    if (z.avail_in == 0 && fed < static_cast<int64_t>(in.size())) {
      z.avail_in = static_cast<uInt>(std::min<int64_t>(static_cast<int64_t>(in.size()) - fed, 1 << 30));
      fed += z.avail_in;
    }
    const int64_t produced = static_cast<int64_t>(z.total_out);
    z.next_out = out.data() + produced;
    z.avail_out = static_cast<uInt>(std::min<int64_t>(capacity - produced, 1 << 30));
    const int rc = inflate(&z, Z_NO_FLUSH);
    if (rc == Z_STREAM_END) break;
    if (rc == Z_MEM_ERROR) throw std::bad_alloc();
    if (rc != Z_OK && rc != Z_BUF_ERROR) return kMemberCorrupt;  // Z_DATA_ERROR (bad codes, distances), Z_NEED_DICT
    if (static_cast<int64_t>(z.total_out) == capacity) {
      if (size >= 0) return kMemberCorrupt;  // more bytes than the directory says
      if (capacity >= limit) return kTooLarge;
      capacity = std::min<int64_t>(limit, capacity * 2);
      out.resize(static_cast<size_t>(capacity));
      continue;
    }
    // Room left but no input: the stream was cut before its final block ended.
    if (z.avail_in == 0 && fed == static_cast<int64_t>(in.size()) && z.avail_out > 0) return kMemberCorrupt;
  }
  const int64_t total = static_cast<int64_t>(z.total_out);
  out.resize(static_cast<size_t>(total));
  if (size >= 0 && total != size) return kMemberCorrupt;
  if (total > max_bytes) return kTooLarge;
  return kOk;
}

// Reads one candidate's encoded image into out: a whole file or a byte range of one (tar members), or a zip member
// located through its local header, inflated when deflated, and checked against the directory's size and CRC-32.
// Only regular files: O_NONBLOCK keeps a FIFO or device path from blocking the worker forever, and fstat rejects it
// before any read.
Status read_candidate(const char* path, const Candidate& c, int64_t max_bytes, std::vector<uint8_t>& out,
                      std::vector<uint8_t>& packed) {
  out.clear();
  Fd file;
  file.fd = ::open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (file.fd < 0) return (errno == ENOENT || errno == ENOTDIR) ? kMissing : kUnreadable;
  struct stat st;
  if (::fstat(file.fd, &st) != 0 || !S_ISREG(st.st_mode)) return kUnreadable;
  const int64_t file_size = static_cast<int64_t>(st.st_size);
  int64_t offset = c.offset;
  if (offset < 0) return kUnreadable;
  if (offset > file_size) return kTruncated;
  if (c.flags & DC_CAND_ZIP_LOCAL) {
    // The local header: signature, ..., name length at 26, extra length at 28; the data follows name and extra.
    uint8_t local[30];
    if (file_size - offset < 30) return kTruncated;
    const Status status = pread_exact(file.fd, offset, 30, local);
    if (status != kOk) return status;
    if (le32(local) != 0x04034b50u) return kMemberCorrupt;
    offset += 30 + le16(local + 26) + le16(local + 28);
    if (offset > file_size) return kTruncated;
  }
  const int64_t length = c.length < 0 ? file_size - offset : c.length;
  if (c.method == DC_CAND_RAW) {
    if (c.size >= 0 && c.size != length) return kMemberCorrupt;
    if (length == 0) return kEmpty;
    if (length > max_bytes) return kTooLarge;
    if (length > file_size - offset) return kTruncated;  // a member cut short by a truncated shard or archive
    out.resize(static_cast<size_t>(length));
    const Status status = pread_exact(file.fd, offset, length, out.data());
    if (status != kOk) return status;
  } else {
    if (c.size > max_bytes || length > max_bytes) return kTooLarge;
    if (length > file_size - offset) return kTruncated;
    packed.resize(static_cast<size_t>(length));
    Status status = pread_exact(file.fd, offset, length, packed.data());
    if (status != kOk) return status;
    status = inflate_raw(packed, c.size, max_bytes, out);
    if (status != kOk) return status;
  }
  if (c.crc >= 0 && crc32_z(0, out.data(), out.size()) != static_cast<uLong>(c.crc)) return kMemberCorrupt;
  return out.empty() ? kEmpty : kOk;
}

// ---- decoding -----------------------------------------------------------------------------------------------------

struct Image {
  int w = 0, h = 0;
  std::vector<uint8_t> px;  // h * w * 3, RGB8, row-major
  void resize(int width, int height) {
    w = width;
    h = height;
    px.resize(static_cast<size_t>(w) * h * 3);
  }
};

enum class Format { kUnknown, kJpeg, kPng, kWebp };

struct Header {
  Format format = Format::kUnknown;
  int width = 0, height = 0;
  int jpeg_colorspace = 0;
};

// One TurboJPEG handle per thread (handles are not thread-safe, and creating one per image costs an allocation). It
// is discarded after any failed call: libjpeg-turbo 2.1 can leave a handle unusable after a fatal error (a bogus
// Huffman table made every later image on that worker fail), so the next image gets a fresh one.
class JpegDecoder {
 public:
  JpegDecoder() = default;
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;
  ~JpegDecoder() { reset(); }
  tjhandle get() {
    if (h_ == nullptr) {
      h_ = tjInitDecompress();
      if (h_ == nullptr) throw std::runtime_error("tjInitDecompress failed");
    }
    return h_;
  }
  void reset() {
    if (h_ != nullptr) tjDestroy(h_);
    h_ = nullptr;
  }

 private:
  tjhandle h_ = nullptr;
};

// TurboJPEG reports errors and libjpeg warnings through the same -1; the message and the data decide the reason.
// "extraneous bytes before marker" is a harmless warning that many camera and web JPEGs carry (PIL decodes them
// silently), so those images are kept; every other warning (corrupt entropy data) skips the image.
Status jpeg_failure(JpegDecoder& jpeg, const uint8_t* data, size_t n, bool decoding, bool* keep) {
  const char* raw = tjGetErrorStr2(jpeg.get());
  const std::string message = raw != nullptr ? raw : "";
  const bool warning = tjGetErrorCode(jpeg.get()) == TJERR_WARNING;
  jpeg.reset();
  if (keep != nullptr) *keep = false;
  // A complete JPEG ends with the EOI marker; a failure on data without one is a cut-off file (libjpeg then reports
  // whatever structure it found missing, e.g. "missing SOS marker").
  const bool complete = n >= 2 && data[n - 2] == 0xff && data[n - 1] == 0xd9;
  if (message.find("Premature end") != std::string::npos || !complete) return kTruncated;
  if (message.find("Unsupported") != std::string::npos) return kUnsupported;
  if (decoding && warning && message.find("extraneous bytes") != std::string::npos) {
    if (keep != nullptr) *keep = true;
    return kOk;
  }
  return kCorrupt;
}

uint32_t be32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | p[3];
}

// Format from the magic bytes, then the dimensions from the header alone (nothing is decoded, nothing allocated).
Status read_header(const uint8_t* data, size_t n, JpegDecoder& jpeg, Header& out) {
  static const uint8_t kPngSig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  if (n == 0) return kEmpty;
  if (n >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) {
    out.format = Format::kJpeg;
    int w = 0, h = 0, subsamp = 0, colorspace = 0;
    if (tjDecompressHeader3(jpeg.get(), data, static_cast<unsigned long>(n), &w, &h, &subsamp, &colorspace) != 0) {
      return jpeg_failure(jpeg, data, n, false, nullptr);
    }
    out.width = w;
    out.height = h;
    out.jpeg_colorspace = colorspace;
    // libjpeg's memory source pads a short buffer with a fake EOI, so a file cut inside its header "parses" to 0x0.
    if ((w <= 0 || h <= 0) && !(n >= 2 && data[n - 2] == 0xff && data[n - 1] == 0xd9)) return kTruncated;
  } else if (n >= 8 && std::memcmp(data, kPngSig, 8) == 0) {
    out.format = Format::kPng;
    // Signature, then the IHDR chunk: length (4), "IHDR", width (4), height (4).
    if (n < 8 + 8 + 8) return kTruncated;
    if (std::memcmp(data + 12, "IHDR", 4) != 0) return kCorrupt;
    out.width = static_cast<int>(std::min<uint32_t>(be32(data + 16), 0x7fffffff));
    out.height = static_cast<int>(std::min<uint32_t>(be32(data + 20), 0x7fffffff));
  } else if (n >= 12 && std::memcmp(data, "RIFF", 4) == 0 && std::memcmp(data + 8, "WEBP", 4) == 0) {
    out.format = Format::kWebp;
    // The RIFF header holds the file size: fewer bytes than it promises is a truncated file.
    const uint32_t riff = static_cast<uint32_t>(data[4]) | (static_cast<uint32_t>(data[5]) << 8) |
                          (static_cast<uint32_t>(data[6]) << 16) | (static_cast<uint32_t>(data[7]) << 24);
    if (static_cast<uint64_t>(riff) + 8 > n) return kTruncated;
    WebPBitstreamFeatures features;
    const VP8StatusCode code = WebPGetFeatures(data, n, &features);
    if (code == VP8_STATUS_NOT_ENOUGH_DATA) return kTruncated;
    if (code == VP8_STATUS_UNSUPPORTED_FEATURE) return kUnsupported;
    if (code != VP8_STATUS_OK) return kCorrupt;
    if (features.has_animation) return kUnsupported;
    out.width = features.width;
    out.height = features.height;
  } else {
    return kUnsupported;  // GIF, BMP, TIFF, HTML error pages, random bytes, ...
  }
  if (out.width <= 0 || out.height <= 0) return kCorrupt;
  return kOk;
}

// PIL's cmyk2rgb after its "CMYK;I" raw mode: JPEG CMYK is stored Adobe-inverted, and PIL always assumes so.
inline uint8_t muldiv255(int a, int b) {
  const int t = a * b + 128;
  return static_cast<uint8_t>(((t >> 8) + t) >> 8);
}

Status decode_jpeg(const uint8_t* data, size_t n, const Header& header, int scale_num, JpegDecoder& jpeg,
                   std::vector<uint8_t>& scratch, Image& out) {
  const tjscalingfactor factor{scale_num, 8};
  const int w = TJSCALED(header.width, factor);
  const int h = TJSCALED(header.height, factor);
  const bool cmyk = header.jpeg_colorspace == TJCS_CMYK || header.jpeg_colorspace == TJCS_YCCK;
  uint8_t* target;
  if (cmyk) {
    scratch.resize(static_cast<size_t>(w) * h * 4);
    target = scratch.data();
  } else {
    out.resize(w, h);
    target = out.px.data();
  }
  // Flags 0: TurboJPEG's decompression defaults are libjpeg's (accurate integer IDCT, fancy upsampling), the same
  // as PIL's, so a full-size decode is bit-identical to Image.open().convert("RGB").
  if (tjDecompress2(jpeg.get(), data, static_cast<unsigned long>(n), target, w, 0, h, cmyk ? TJPF_CMYK : TJPF_RGB, 0) !=
      0) {
    bool keep = false;
    const Status status = jpeg_failure(jpeg, data, n, true, &keep);
    if (!keep) return status;
  }
  if (cmyk) {
    out.resize(w, h);
    const size_t count = static_cast<size_t>(w) * h;
    for (size_t i = 0; i < count; ++i) {
      const uint8_t* p = &scratch[i * 4];
      const int nk = p[3];  // inverted storage: 255 - k
      out.px[i * 3 + 0] = static_cast<uint8_t>(nk - muldiv255(255 - p[0], nk));
      out.px[i * 3 + 1] = static_cast<uint8_t>(nk - muldiv255(255 - p[1], nk));
      out.px[i * 3 + 2] = static_cast<uint8_t>(nk - muldiv255(255 - p[2], nk));
    }
  }
  return kOk;
}

// libpng reports errors by longjmp. Everything between setjmp and the calls that may jump lives in this one
// function or in plain structs, so no C++ destructor is ever skipped; the error handler records why it jumped.
struct PngSource {
  const uint8_t* data;
  size_t size;
  size_t pos;
  bool truncated;
  char message[128];
};

void png_read_memory(png_structp png, png_bytep out, png_size_t length) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (length > src->size - src->pos) {
    src->truncated = true;
    png_error(png, "unexpected end of data");
  }
  std::memcpy(out, src->data + src->pos, length);
  src->pos += length;
}

void png_on_error(png_structp png, png_const_charp message) {
  auto* src = static_cast<PngSource*>(png_get_error_ptr(png));
  std::snprintf(src->message, sizeof(src->message), "%s", message != nullptr ? message : "libpng error");
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}  // ancillary-chunk problems: PIL ignores them too

Status decode_png(const uint8_t* data, size_t n, int alpha_mode, int64_t max_pixels, std::vector<uint8_t>& rgba,
                  std::vector<png_bytep>& rows, Image& out) {
  PngSource src{data, n, 0, false, {0}};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
  if (png == nullptr) return kFailed;
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    return kFailed;
  }
  volatile Status status = kOk;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    if (status != kOk) return status;
    return src.truncated ? kTruncated : kCorrupt;
  }
  png_set_read_fn(png, &src, png_read_memory);
  // The pixel limit is ours (checked below); libpng's default 1,000,000-per-side limit would reject valid panoramas.
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
  // Bounds the memory of decompressed ancillary chunks (zTXt/iCCP), the other PNG decompression bomb.
  png_set_chunk_malloc_max(png, 16u << 20);
  png_read_info(png, info);
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  png_get_IHDR(png, info, &width, &height, &bit_depth, &color_type, &interlace, nullptr, nullptr);
  if (width == 0 || height == 0) {
    status = kCorrupt;
    png_error(png, "zero size");
  }
  if (static_cast<int64_t>(width) * static_cast<int64_t>(height) > max_pixels) {
    status = kTooLarge;
    png_error(png, "too many pixels");
  }
  // Everything to 8-bit RGB (+ alpha when compositing): palette lookup, gray expansion, 16-bit to its high byte
  // (PIL's "RGB;16B" raw mode does the same), gray to RGB.
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (alpha_mode == 1 && png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  if (bit_depth == 16) png_set_strip_16(png);
  if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  if (alpha_mode == 0) png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const int channels = png_get_channels(png, info);
  if (channels != 3 && channels != 4) {
    status = kUnsupported;
    png_error(png, "unexpected channel count");
  }
  const size_t row_bytes = png_get_rowbytes(png, info);
  rgba.resize(row_bytes * height);
  rows.resize(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = rgba.data() + y * row_bytes;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);  // a file without its trailing chunks (IEND) counts as truncated
  png_destroy_read_struct(&png, &info, nullptr);

  out.resize(static_cast<int>(width), static_cast<int>(height));
  const size_t count = static_cast<size_t>(width) * height;
  if (channels == 3) {
    for (png_uint_32 y = 0; y < height; ++y) {
      std::memcpy(&out.px[static_cast<size_t>(y) * width * 3], rows[y], static_cast<size_t>(width) * 3);
    }
  } else {
    for (size_t i = 0; i < count; ++i) {
      const size_t y = i / width, x = i % width;
      const uint8_t* p = rows[y] + x * 4;
      for (int c = 0; c < 3; ++c) out.px[i * 3 + c] = static_cast<uint8_t>((p[c] * p[3] + 127) / 255);
    }
  }
  return kOk;
}

Status decode_webp(const uint8_t* data, size_t n, const Header& header, int alpha_mode, std::vector<uint8_t>& rgba,
                   Image& out) {
  out.resize(header.width, header.height);
  if (alpha_mode == 0) {
    // MODE_RGB ignores the alpha plane: PIL's RGBA -> convert("RGB") keeps the same colour values.
    if (WebPDecodeRGBInto(data, n, out.px.data(), out.px.size(), header.width * 3) == nullptr) return kCorrupt;
    return kOk;
  }
  rgba.resize(static_cast<size_t>(header.width) * header.height * 4);
  if (WebPDecodeRGBAInto(data, n, rgba.data(), rgba.size(), header.width * 4) == nullptr) return kCorrupt;
  for (size_t i = 0, count = static_cast<size_t>(header.width) * header.height; i < count; ++i) {
    const uint8_t* p = &rgba[i * 4];
    for (int c = 0; c < 3; ++c) out.px[i * 3 + c] = static_cast<uint8_t>((p[c] * p[3] + 127) / 255);
  }
  return kOk;
}

struct Scratch {
  JpegDecoder jpeg;
  std::vector<uint8_t> bytes, packed, decode, temp, view;
  std::vector<png_bytep> rows;
  std::vector<double> coeffs;
  Image image;
};

// scale_num / 8 is the JPEG DCT scaling factor (8 = full size); other formats always decode at full size.
Status decode(const uint8_t* data, size_t n, const Header& header, int scale_num, int alpha_mode, int64_t max_pixels,
              Scratch& s, Image& out) {
  switch (header.format) {
    case Format::kJpeg: return decode_jpeg(data, n, header, scale_num, s.jpeg, s.decode, out);
    case Format::kPng: return decode_png(data, n, alpha_mode, max_pixels, s.decode, s.rows, out);
    case Format::kWebp: return decode_webp(data, n, header, alpha_mode, s.decode, out);
    default: return kUnsupported;
  }
}

// The smallest DCT factor n/8 whose decoded size (TurboJPEG's ceil(dim * n / 8)) `fits`, i.e. still keeps every region
// of interest at least as large as its output, so the resampling afterwards only ever shrinks, as it would from the
// full-size image. 8 (full size) when no smaller factor fits.
template <typename Fits>
int pick_scale(int width, int height, Fits fits) {
  for (int num = 1; num < 8; ++num) {
    const int64_t sw = (static_cast<int64_t>(width) * num + 7) / 8;
    const int64_t sh = (static_cast<int64_t>(height) * num + 7) / 8;
    if (fits(static_cast<double>(sw), static_cast<double>(sh))) return num;
  }
  return 8;
}

// ---- resampling: Pillow's Resample.c, bit for bit (8-bit, two passes, 22-bit fixed-point coefficients) ----------

constexpr int kPrecisionBits = 32 - 8 - 2;

struct Filter {
  double (*fn)(double);
  double support;
};

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

constexpr Filter kBicubic{bicubic_filter, 2.0};
constexpr Filter kBilinear{bilinear_filter, 1.0};

struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;  // (xmin, count) per output pixel
  std::vector<int32_t> k;   // ksize per output pixel
};

// precompute_coeffs + normalize_coeffs_8bpc, for the output pixels [from, from + count) of out_size (each pixel's
// coefficients depend on its own position only). in0/in1 are floats because Pillow's box is float[4].
void precompute_coeffs(int in_size, float in0, float in1, int out_size, const Filter& filter,
                       std::vector<double>& pre, Coeffs& c, int from, int count) {
  double filterscale, scale;
  filterscale = scale = static_cast<double>(in1 - in0) / out_size;
  if (filterscale < 1.0) filterscale = 1.0;
  const double support = filter.support * filterscale;
  const int ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.ksize = ksize;
  pre.assign(static_cast<size_t>(count) * ksize, 0.0);
  c.bounds.assign(static_cast<size_t>(count) * 2, 0);
  for (int i = 0; i < count; ++i) {
    const int xx = from + i;
    const double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double* k = &pre[static_cast<size_t>(i) * ksize];
    for (int x = 0; x < xmax; ++x) {
      const double w = filter.fn((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x) {
      if (ww != 0.0) k[x] /= ww;
    }
    c.bounds[static_cast<size_t>(i) * 2] = xmin;
    c.bounds[static_cast<size_t>(i) * 2 + 1] = std::max(xmax, 0);
  }
  c.k.resize(pre.size());
  for (size_t i = 0; i < pre.size(); ++i) {
    c.k[i] = pre[i] < 0 ? static_cast<int32_t>(-0.5 + pre[i] * (1 << kPrecisionBits))
                        : static_cast<int32_t>(0.5 + pre[i] * (1 << kPrecisionBits));
  }
}

inline uint8_t clip8(int32_t in) {
  if (in >= (1 << kPrecisionBits << 8)) return 255;
  if (in <= 0) return 0;
  return static_cast<uint8_t>(in >> kPrecisionBits);
}

// A read-only RGB8 region: `w` x `h` pixels starting at `data`, rows `stride` bytes apart.
struct View {
  const uint8_t* data;
  int w, h;
  size_t stride;
};

// Image.resize((out_w, out_h), filter, box) applied to `in` (a crop, already cut out as PIL's crop() would), of which
// only the window [wx, wx + ww) x [wy, wy + wh) is computed, into out (ww * wh * 3). Every output pixel depends on its
// own coefficients only, so the window holds exactly those pixels of the full result: eval's center crop needs no
// full-size intermediate (which, for an extreme aspect ratio, could be gigabytes).
void resample(const View& in, float bx0, float by0, float bx1, float by1, int out_w, int out_h, const Filter& filter,
              Scratch& s, uint8_t* out, int wx, int wy, int ww, int wh) {
  const bool need_h = out_w != in.w || bx0 != 0 || bx1 != out_w;
  const bool need_v = out_h != in.h || by0 != 0 || by1 != out_h;
  Coeffs ch, cv;
  precompute_coeffs(in.w, bx0, bx1, out_w, filter, s.coeffs, ch, wx, ww);
  precompute_coeffs(in.h, by0, by1, out_h, filter, s.coeffs, cv, wy, wh);
  View src = in;
  if (need_h) {
    // Only the rows the vertical pass reads (Pillow's ybox_first..ybox_last); without a vertical pass, output row y
    // is source row y.
    int row0 = wy, rows = wh;
    if (need_v) {
      row0 = cv.bounds[0];
      rows = cv.bounds[static_cast<size_t>(wh) * 2 - 2] + cv.bounds[static_cast<size_t>(wh) * 2 - 1] - row0;
      for (int i = 0; i < wh; ++i) cv.bounds[static_cast<size_t>(i) * 2] -= row0;
    }
    uint8_t* dst = out;
    if (need_v) {
      s.temp.resize(static_cast<size_t>(rows) * ww * 3);
      dst = s.temp.data();
    }
    for (int yy = 0; yy < rows; ++yy) {
      const uint8_t* line = in.data + static_cast<size_t>(yy + row0) * in.stride;
      uint8_t* o = dst + static_cast<size_t>(yy) * ww * 3;
      for (int xx = 0; xx < ww; ++xx) {
        const int xmin = ch.bounds[static_cast<size_t>(xx) * 2], xcount = ch.bounds[static_cast<size_t>(xx) * 2 + 1];
        const int32_t* k = &ch.k[static_cast<size_t>(xx) * ch.ksize];
        // int32 sums, as Pillow's: |sum| < 255 * 1.2 * 2^22 fits, and the compiler vectorises them.
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        const uint8_t* p = line + static_cast<size_t>(xmin) * 3;
        for (int x = 0; x < xcount; ++x, p += 3) {
          s0 += p[0] * k[x];
          s1 += p[1] * k[x];
          s2 += p[2] * k[x];
        }
        o[xx * 3 + 0] = clip8(s0);
        o[xx * 3 + 1] = clip8(s1);
        o[xx * 3 + 2] = clip8(s2);
      }
    }
    if (!need_v) return;
    src = View{s.temp.data(), ww, rows, static_cast<size_t>(ww) * 3};
  } else if (need_v) {
    // No horizontal pass (out_w == in.w): the window's columns come straight from the source.
    src = View{in.data + static_cast<size_t>(wx) * 3, ww, in.h, in.stride};
  }
  if (need_v) {
    const int width3 = ww * 3;
    // Row by row into int32 sums (cache-friendly; the same total as Pillow's column order, no partial sum can
    // overflow: each is bounded by 255 times the sum of the positive weights).
    std::vector<int32_t> acc(static_cast<size_t>(width3));
    for (int yy = 0; yy < wh; ++yy) {
      const int ymin = cv.bounds[static_cast<size_t>(yy) * 2], ycount = cv.bounds[static_cast<size_t>(yy) * 2 + 1];
      const int32_t* k = &cv.k[static_cast<size_t>(yy) * cv.ksize];
      std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
      int32_t* a = acc.data();
      for (int y = 0; y < ycount; ++y) {
        const uint8_t* line = src.data + static_cast<size_t>(y + ymin) * src.stride;
        const int32_t weight = k[y];
        for (int i = 0; i < width3; ++i) a[i] += line[i] * weight;
      }
      uint8_t* o = out + static_cast<size_t>(yy) * width3;
      for (int i = 0; i < width3; ++i) o[i] = clip8(acc[static_cast<size_t>(i)]);
    }
    return;
  }
  // Neither pass: Pillow returns a copy.
  for (int y = 0; y < wh; ++y) {
    std::memcpy(out + static_cast<size_t>(y) * ww * 3, in.data + static_cast<size_t>(y + wy) * in.stride + wx * 3,
                static_cast<size_t>(ww) * 3);
  }
}

// ---- colour operations on an RGB8 buffer (Pillow's C code, with its float/double types kept) -------------------

inline int luma(const uint8_t* p) { return (p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16; }

// Image.blend(degenerate, image, alpha): out = degenerate + alpha * (image - degenerate), truncated; clipped only
// when extrapolating (alpha outside [0, 1]), exactly as ImagingBlend.
inline uint8_t blend(int degenerate, int value, float alpha) {
  const float t = static_cast<float>(degenerate) + alpha * static_cast<float>(value - degenerate);
  if (alpha >= 0 && alpha <= 1.0f) return static_cast<uint8_t>(t);
  if (t <= 0.0f) return 0;
  if (t >= 255.0f) return 255;
  return static_cast<uint8_t>(t);
}

void adjust_brightness(std::vector<uint8_t>& px, double factor) {
  const float alpha = static_cast<float>(factor);
  for (auto& v : px) v = blend(0, v, alpha);
}

void adjust_contrast(std::vector<uint8_t>& px, double factor) {
  // ImageEnhance.Contrast: the degenerate image is the mean of the L channel, int(mean + 0.5).
  const size_t count = px.size() / 3;
  double sum = 0;
  for (size_t i = 0; i < count; ++i) sum += luma(&px[i * 3]);
  const int mean = static_cast<int>(sum / static_cast<double>(count) + 0.5);
  const float alpha = static_cast<float>(factor);
  for (auto& v : px) v = blend(mean, v, alpha);
}

void adjust_saturation(std::vector<uint8_t>& px, double factor) {
  // ImageEnhance.Color: blend with the image's own L channel.
  const float alpha = static_cast<float>(factor);
  for (size_t i = 0; i < px.size(); i += 3) {
    const int l = luma(&px[i]);
    for (int c = 0; c < 3; ++c) px[i + c] = blend(l, px[i + c], alpha);
  }
}

inline uint8_t clip8i(int v) { return static_cast<uint8_t>(v <= 0 ? 0 : v >= 255 ? 255 : v); }

// C's round() for x >= 0 (half away from zero), inline: x - trunc(x) is exact for 0 <= x < 2^31.
inline int round_nonnegative(double x) {
  const int t = static_cast<int>(x);
  return t + (x - t >= 0.5 ? 1 : 0);
}

void adjust_hue(std::vector<uint8_t>& px, double factor) {
  // torchvision F_pil.adjust_hue: convert("HSV"), h += np.uint8(factor * 255) with uint8 wrap-around, back to RGB.
  // np.uint8 of a negative float wraps like a C cast through int. The arithmetic is Pillow's rgb2hsv_row/hsv2rgb with
  // their float/double mix; what depends on one byte only (hue sector and fraction, saturation as a fraction) comes
  // from small tables, and fmod/floor/round have exact inline forms for the non-negative ranges they see here.
  const uint8_t shift = static_cast<uint8_t>(static_cast<int>(factor * 255));
  int sector_of[256];
  float frac_of[256], sat_of[256];
  for (int v = 0; v < 256; ++v) {
    const double scaled = static_cast<float>(v) * 6.0 / 255.0;
    sector_of[v] = static_cast<int>(scaled);  // floor of a non-negative value
    frac_of[v] = static_cast<float>(scaled - static_cast<float>(sector_of[v]));
    sat_of[v] = static_cast<float>(static_cast<float>(v) / 255.0);
  }
  for (size_t i = 0; i < px.size(); i += 3) {
    const uint8_t r = px[i], g = px[i + 1], b = px[i + 2];
    // rgb2hsv_row
    const uint8_t maxc = std::max(r, std::max(g, b)), minc = std::min(r, std::min(g, b));
    if (minc == maxc) continue;  // gray: h = s = 0, and hsv2rgb gives (v, v, v) back whatever the shift
    const uint8_t uv = maxc;
    const float cr = static_cast<float>(maxc - minc);
    const float s = cr / static_cast<float>(maxc);
    const float rc = static_cast<float>(maxc - r) / cr;
    const float gc = static_cast<float>(maxc - g) / cr;
    const float bc = static_cast<float>(maxc - b) / cr;
    float h;
    if (r == maxc) {
      h = bc - gc;
    } else if (g == maxc) {
      h = static_cast<float>(2.0 + rc - bc);
    } else {
      h = static_cast<float>(4.0 + gc - rc);
    }
    const double wrapped = h / 6.0 + 1.0;  // in [5/6, 11/6]: fmod(x, 1) is x - 1 exactly when x >= 1
    h = static_cast<float>(wrapped >= 1.0 ? wrapped - 1.0 : wrapped);
    const uint8_t uh = clip8i(static_cast<int>(h * 255.0));
    const uint8_t us = clip8i(static_cast<int>(s * 255.0));
    if (us == 0) {
      px[i] = px[i + 1] = px[i + 2] = uv;
      continue;
    }
    // hsv2rgb
    const uint8_t hh = static_cast<uint8_t>(uh + shift);
    const int sector = sector_of[hh];
    const float f = frac_of[hh];
    const float fs = sat_of[us];
    const float v = static_cast<float>(uv);
    const uint8_t up = clip8i(round_nonnegative(v * (1.0 - fs)));
    const uint8_t uq = clip8i(round_nonnegative(v * (1.0 - fs * f)));
    const uint8_t ut = clip8i(round_nonnegative(v * (1.0 - fs * (1.0 - f))));
    uint8_t o[3];
    switch (sector % 6) {
      case 0: o[0] = uv, o[1] = ut, o[2] = up; break;
      case 1: o[0] = uq, o[1] = uv, o[2] = up; break;
      case 2: o[0] = up, o[1] = uv, o[2] = ut; break;
      case 3: o[0] = up, o[1] = uq, o[2] = uv; break;
      case 4: o[0] = ut, o[1] = up, o[2] = uv; break;
      default: o[0] = uv, o[1] = up, o[2] = uq; break;
    }
    px[i] = o[0], px[i + 1] = o[1], px[i + 2] = o[2];
  }
}

void to_grayscale(std::vector<uint8_t>& px) {
  for (size_t i = 0; i < px.size(); i += 3) px[i] = px[i + 1] = px[i + 2] = static_cast<uint8_t>(luma(&px[i]));
}

void solarize(std::vector<uint8_t>& px, double threshold) {
  for (auto& v : px) v = v < threshold ? v : static_cast<uint8_t>(255 - v);
}

// ImagingLineBoxBlur32 on one line of `count` RGB pixels (in and out are separate buffers).
void line_box_blur(const uint8_t* in, uint8_t* out, int count, int radius, uint32_t ww, uint32_t fw) {
  const int lastx = count - 1;
  const int edge_a = std::min(radius + 1, count);
  const int edge_b = std::max(count - radius - 1, 0);
  for (int c = 0; c < 3; ++c) {
    auto at = [&](int x) -> uint32_t { return in[x * 3 + c]; };
    uint32_t acc = at(0) * static_cast<uint32_t>(radius + 1);
    for (int x = 0; x < edge_a - 1; ++x) acc += at(x);
    acc += at(lastx) * static_cast<uint32_t>(radius - edge_a + 1);
    auto step = [&](int x, int subtract, int add, int left, int right) {
      acc += at(add) - at(subtract);
      const uint32_t bulk = acc * ww + (at(left) + at(right)) * fw;
      out[x * 3 + c] = static_cast<uint8_t>((bulk + (1u << 23)) >> 24);
    };
    if (edge_a <= edge_b) {
      for (int x = 0; x < edge_a; ++x) step(x, 0, x + radius, 0, x + radius + 1);
      for (int x = edge_a; x < edge_b; ++x) step(x, x - radius - 1, x + radius, x - radius - 1, x + radius + 1);
      for (int x = edge_b; x <= lastx; ++x) step(x, x - radius - 1, lastx, x - radius - 1, lastx);
    } else {
      for (int x = 0; x < edge_b; ++x) step(x, 0, x + radius, 0, x + radius + 1);
      for (int x = edge_b; x < edge_a; ++x) step(x, 0, lastx, 0, lastx);
      for (int x = edge_a; x <= lastx; ++x) step(x, x - radius - 1, lastx, x - radius - 1, lastx);
    }
  }
}

// ImageFilter.GaussianBlur(radius=sigma): Pillow approximates the Gaussian by three extended box blurs per axis.
void gaussian_blur(std::vector<uint8_t>& px, int w, int h, double sigma_in) {
  constexpr int passes = 3;
  const float radius = static_cast<float>(sigma_in);
  // _gaussian_blur_radius (Gwosdek et al.), float/double mix as in BoxBlur.c.
  const float sigma2 = radius * radius / passes;
  const float big_l = static_cast<float>(std::sqrt(12.0 * sigma2 + 1.0));
  const float l = static_cast<float>(std::floor((big_l - 1.0) / 2.0));
  float a = (2 * l + 1) * (l * (l + 1) - 3 * sigma2);
  a /= 6 * (sigma2 - (l + 1) * (l + 1));
  const float box = l + a;
  const int r = static_cast<int>(box);
  const uint32_t ww = static_cast<uint32_t>(static_cast<float>(1u << 24) / (box * 2 + 1));
  const uint32_t fw = ((1u << 24) - static_cast<uint32_t>(r * 2 + 1) * ww) / 2;
  const int longest = std::max(w, h);
  std::vector<uint8_t> a_line(static_cast<size_t>(longest) * 3), b_line(static_cast<size_t>(longest) * 3);
  for (int y = 0; y < h; ++y) {
    uint8_t* row = &px[static_cast<size_t>(y) * w * 3];
    std::memcpy(a_line.data(), row, static_cast<size_t>(w) * 3);
    for (int p = 0; p < passes; ++p) {
      line_box_blur(a_line.data(), b_line.data(), w, r, ww, fw);
      std::swap(a_line, b_line);
    }
    std::memcpy(row, a_line.data(), static_cast<size_t>(w) * 3);
  }
  for (int x = 0; x < w; ++x) {
    for (int y = 0; y < h; ++y) {
      std::memcpy(&a_line[static_cast<size_t>(y) * 3], &px[(static_cast<size_t>(y) * w + x) * 3], 3);
    }
    for (int p = 0; p < passes; ++p) {
      line_box_blur(a_line.data(), b_line.data(), h, r, ww, fw);
      std::swap(a_line, b_line);
    }
    for (int y = 0; y < h; ++y) {
      std::memcpy(&px[(static_cast<size_t>(y) * w + x) * 3], &a_line[static_cast<size_t>(y) * 3], 3);
    }
  }
}

// ToTensor (x / 255 in float32) then Normalize ((x - mean) / std in float32), into a planar (3, S, S) slot.
void normalize_into(const std::vector<uint8_t>& px, int side, const Config& cfg, float* out) {
  const size_t plane = static_cast<size_t>(side) * side;
  for (int c = 0; c < 3; ++c) {
    float lut[256];
    for (int v = 0; v < 256; ++v) lut[v] = (static_cast<float>(v) / 255.0f - cfg.mean[c]) / cfg.std[c];
    float* o = out + plane * c;
    for (size_t i = 0; i < plane; ++i) o[i] = lut[px[i * 3 + c]];
  }
}

// ---- the transforms -------------------------------------------------------------------------------------------

struct Box {
  int top, left, height, width, attempt;  // attempt 1..10, or 0 for the center-crop fallback
};

// torchvision RandomResizedCrop.get_params: 10 tries of (area fraction, log-uniform aspect), then the center crop
// clamped to the ratio range. Python's round() is round-half-even, hence nearbyint.
Box sample_crop(Rng& rng, int width, int height, const Config& cfg) {
  const double area = static_cast<double>(height) * width;
  const double log_lo = std::log(cfg.ratio[0]), log_hi = std::log(cfg.ratio[1]);
  for (int attempt = 1; attempt <= 10; ++attempt) {
    const double target_area = area * rng.uniform(cfg.scale[0], cfg.scale[1]);
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    const int w = static_cast<int>(std::nearbyint(std::sqrt(target_area * aspect)));
    const int h = static_cast<int>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int top = static_cast<int>(rng.below(height - h + 1));
      const int left = static_cast<int>(rng.below(width - w + 1));
      return Box{top, left, h, w, attempt};
    }
  }
  const double in_ratio = static_cast<double>(width) / height;
  int w, h;
  if (in_ratio < cfg.ratio[0]) {
    w = width;
    h = static_cast<int>(std::nearbyint(w / cfg.ratio[0]));
  } else if (in_ratio > cfg.ratio[1]) {
    h = height;
    w = static_cast<int>(std::nearbyint(h * cfg.ratio[1]));
  } else {
    w = width;
    h = height;
  }
  return Box{(height - h) / 2, (width - w) / 2, h, w, 0};
}

enum ViewFlags : int64_t { kJitter = 1, kGray = 2, kBlur = 4, kSolarize = 8 };

// RandomApply(ColorJitter, p) -> RandomGrayscale -> RandomApply(GaussianBlur) -> Solarization, with the draws in
// torchvision's order: apply?, randperm(4), then one factor per op in use (brightness, contrast, saturation, hue).
int64_t color_ops(Rng& rng, const Config& cfg, std::vector<uint8_t>& px, int side) {
  int64_t flags = 0;
  if (rng.uniform() < cfg.jitter_p) {
    flags |= kJitter;
    int order[4] = {0, 1, 2, 3};
    for (int i = 3; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);
    const bool use[4] = {!(cfg.brightness[0] == 1 && cfg.brightness[1] == 1),
                         !(cfg.contrast[0] == 1 && cfg.contrast[1] == 1),
                         !(cfg.saturation[0] == 1 && cfg.saturation[1] == 1), !(cfg.hue[0] == 0 && cfg.hue[1] == 0)};
    double factor[4] = {1, 1, 1, 0};
    if (use[0]) factor[0] = rng.uniform(cfg.brightness[0], cfg.brightness[1]);
    if (use[1]) factor[1] = rng.uniform(cfg.contrast[0], cfg.contrast[1]);
    if (use[2]) factor[2] = rng.uniform(cfg.saturation[0], cfg.saturation[1]);
    if (use[3]) factor[3] = rng.uniform(cfg.hue[0], cfg.hue[1]);
    for (int op : order) {
      if (!use[op]) continue;
      switch (op) {
        case 0: adjust_brightness(px, factor[0]); break;
        case 1: adjust_contrast(px, factor[1]); break;
        case 2: adjust_saturation(px, factor[2]); break;
        default: adjust_hue(px, factor[3]); break;
      }
    }
  }
  if (rng.uniform() < cfg.gray_p) {
    flags |= kGray;
    to_grayscale(px);
  }
  if (rng.uniform() < cfg.blur_p) {
    flags |= kBlur;
    gaussian_blur(px, side, side, rng.uniform(cfg.sigma[0], cfg.sigma[1]));
  }
  if (rng.uniform() < cfg.solarize_p) {
    flags |= kSolarize;
    solarize(px, cfg.solarize_threshold);
  }
  return flags;
}

// Resize(S) (shorter side, torchvision's int(S * long / short) for the other) -> CenterCrop(S).
struct EvalGeometry {
  int new_w, new_h, top, left;
};

EvalGeometry eval_geometry(int width, int height, int side) {
  EvalGeometry g;
  if (width <= height) {
    g.new_w = side;
    g.new_h = static_cast<int>(static_cast<double>(static_cast<int64_t>(side) * height) / width);
  } else {
    g.new_h = side;
    g.new_w = static_cast<int>(static_cast<double>(static_cast<int64_t>(side) * width) / height);
  }
  g.top = static_cast<int>(std::nearbyint((g.new_h - side) / 2.0));
  g.left = static_cast<int>(std::nearbyint((g.new_w - side) / 2.0));
  return g;
}

// ---- one sample: read, check, decode, transform --------------------------------------------------------------

struct SampleOut {
  float* views[2];      // (3, S, S) each, or nullptr
  int64_t* info;        // DC_INFO_STRIDE values
};

Status process_sample(const Config& cfg, const char* path, const Candidate& candidate, uint64_t seed, int64_t rank,
                      int64_t epoch, Scratch& s, const SampleOut& out) {
  const int64_t index = candidate.index;
  Status status = read_candidate(path, candidate, cfg.max_bytes, s.bytes, s.packed);
  if (status != kOk) return status;
  Header header;
  status = read_header(s.bytes.data(), s.bytes.size(), s.jpeg, header);
  if (status != kOk) return status;
  if (static_cast<int64_t>(header.width) * header.height > cfg.max_pixels) return kTooLarge;

  const int side = cfg.size;
  const int views = cfg.views;
  Rng rngs[2] = {Rng(stream_key(seed, rank, epoch, index, 0)), Rng(stream_key(seed, rank, epoch, index, 1))};
  Box boxes[2] = {};
  EvalGeometry geometry{};
  int scale_num = 8;
  if (cfg.mode == 0) {
    for (int v = 0; v < views; ++v) boxes[v] = sample_crop(rngs[v], header.width, header.height, cfg);
    if (header.format == Format::kJpeg && cfg.dct) {
      const double w = header.width, h = header.height;
      scale_num = pick_scale(header.width, header.height, [&](double sw, double sh) {
        for (int v = 0; v < views; ++v) {
          if (boxes[v].width * sw / w < side || boxes[v].height * sh / h < side) return false;
        }
        return true;
      });
    }
  } else {
    geometry = eval_geometry(header.width, header.height, side);
    if (header.format == Format::kJpeg && cfg.dct) {
      scale_num = pick_scale(header.width, header.height,
                             [&](double sw, double sh) { return sw >= geometry.new_w && sh >= geometry.new_h; });
    }
  }
  Image& image = s.image;
  status = decode(s.bytes.data(), s.bytes.size(), header, scale_num, cfg.alpha, cfg.max_pixels, s, image);
  if (status != kOk) return status;

  int64_t* info = out.info;
  info[DC_INFO_WIDTH] = header.width;
  info[DC_INFO_HEIGHT] = header.height;
  info[DC_INFO_DECODED_WIDTH] = image.w;
  info[DC_INFO_DECODED_HEIGHT] = image.h;
  info[DC_INFO_FLAGS] = 0;
  s.view.resize(static_cast<size_t>(side) * side * 3);
  const double sx = static_cast<double>(image.w) / header.width, sy = static_cast<double>(image.h) / header.height;
  if (cfg.mode == 0) {
    for (int v = 0; v < views; ++v) {
      const Box& b = boxes[v];
      // The crop in decoded pixels. At full size it is exactly PIL's integer crop; after DCT scaling the box is
      // fractional and the crop is the smallest pixel window around it.
      const double x0 = b.left * sx, y0 = b.top * sy, x1 = (b.left + b.width) * sx, y1 = (b.top + b.height) * sy;
      const int cx0 = std::max(0, static_cast<int>(std::floor(x0)));
      const int cy0 = std::max(0, static_cast<int>(std::floor(y0)));
      const int cx1 = std::min(image.w, static_cast<int>(std::ceil(x1)));
      const int cy1 = std::min(image.h, static_cast<int>(std::ceil(y1)));
      const View crop{image.px.data() + (static_cast<size_t>(cy0) * image.w + cx0) * 3, cx1 - cx0, cy1 - cy0,
                      static_cast<size_t>(image.w) * 3};
      resample(crop, static_cast<float>(x0 - cx0), static_cast<float>(y0 - cy0), static_cast<float>(x1 - cx0),
               static_cast<float>(y1 - cy0), side, side, kBicubic, s, s.view.data(), 0, 0, side, side);
      const int64_t flags = color_ops(rngs[v], cfg, s.view, side);
      normalize_into(s.view, side, cfg, out.views[v]);
      int64_t* box = &info[v == 0 ? DC_INFO_U_TOP : DC_INFO_V_TOP];
      box[0] = b.top, box[1] = b.left, box[2] = b.height, box[3] = b.width;
      info[DC_INFO_FLAGS] |= flags << (4 * v);
    }
    if (views == 1) info[DC_INFO_V_TOP] = info[DC_INFO_V_LEFT] = info[DC_INFO_V_HEIGHT] = info[DC_INFO_V_WIDTH] = -1;
  } else {
    const View whole{image.px.data(), image.w, image.h, static_cast<size_t>(image.w) * 3};
    resample(whole, 0.0f, 0.0f, static_cast<float>(image.w), static_cast<float>(image.h), geometry.new_w,
             geometry.new_h, kBilinear, s, s.view.data(), geometry.left, geometry.top, side, side);
    for (int v = 0; v < views; ++v) normalize_into(s.view, side, cfg, out.views[v]);
    info[DC_INFO_U_TOP] = geometry.top, info[DC_INFO_U_LEFT] = geometry.left;
    info[DC_INFO_U_HEIGHT] = geometry.new_h, info[DC_INFO_U_WIDTH] = geometry.new_w;
    info[DC_INFO_V_TOP] = info[DC_INFO_V_LEFT] = info[DC_INFO_V_HEIGHT] = info[DC_INFO_V_WIDTH] = -1;
  }
  return kOk;
}

// ---- loader: a worker pool and its jobs -----------------------------------------------------------------------

struct Job {
  std::string paths;                 // the NUL-terminated paths, as given
  std::vector<size_t> path_at;       // where candidate i's path starts in `paths`
  std::vector<int64_t> candidates;   // DC_CAND_STRIDE per candidate
  std::vector<int64_t> slot_begin;   // batch + 1
  int64_t batch = 0;
  uint64_t seed = 0;
  int64_t rank = 0, epoch = 0;
  at::Tensor tensors[2];
  float* data[2] = {nullptr, nullptr};
  std::vector<int64_t> info;    // batch * DC_INFO_STRIDE
  std::vector<int64_t> status;  // per candidate, -1 until tried
  int64_t remaining = 0;        // slots not finished; guarded by the loader's mutex
};

class Loader {
 public:
  explicit Loader(const Config& cfg) : cfg_(cfg) {
    threads_.reserve(static_cast<size_t>(cfg_.threads));
    for (int i = 0; i < cfg_.threads; ++i) threads_.emplace_back([this] { worker(); });
  }
  ~Loader() { shutdown(); }

  const Config& config() const { return cfg_; }

  int64_t submit(std::shared_ptr<Job> job) {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) throw std::runtime_error("loader is closed");
    const int64_t id = next_id_++;
    int64_t pending = 0;
    for (int64_t slot = 0; slot < job->batch; ++slot) {
      // A slot with an empty chain is left untouched (a refill round passes chains only for unfilled slots).
      if (job->slot_begin[slot] == job->slot_begin[slot + 1]) continue;
      queue_.emplace_back(job, slot);
      ++pending;
    }
    job->remaining = pending;
    jobs_.emplace(id, std::move(job));
    work_cv_.notify_all();
    return id;
  }

  // Blocks until the job is finished; false when the job is unknown or the loader was closed meanwhile.
  bool wait(int64_t id) {
    std::unique_lock<std::mutex> lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return false;
    std::shared_ptr<Job> job = it->second;
    done_cv_.wait(lock, [&] { return job->remaining == 0 || stopping_; });
    return job->remaining == 0;
  }

  std::shared_ptr<Job> take(int64_t id) {
    std::unique_lock<std::mutex> lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) throw std::invalid_argument("loader has no job " + std::to_string(id));
    std::shared_ptr<Job> job = it->second;
    done_cv_.wait(lock, [&] { return job->remaining == 0 || stopping_; });
    if (job->remaining != 0) throw std::runtime_error("loader was closed before the job finished");
    jobs_.erase(id);
    return job;
  }

  void shutdown() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ && threads_.empty()) return;
      stopping_ = true;
      queue_.clear();
    }
    work_cv_.notify_all();
    done_cv_.notify_all();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
    threads_.clear();
  }

 private:
  void worker() {
    Scratch scratch;
    for (;;) {
      std::pair<std::shared_ptr<Job>, int64_t> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      run_slot(*task.first, task.second, scratch);
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (--task.first->remaining == 0) done_cv_.notify_all();
      }
    }
  }

  void run_slot(Job& job, int64_t slot, Scratch& scratch) {
    const size_t plane = static_cast<size_t>(3) * cfg_.size * cfg_.size;
    int64_t* info = &job.info[static_cast<size_t>(slot) * DC_INFO_STRIDE];
    SampleOut out{{nullptr, nullptr}, info};
    for (int v = 0; v < cfg_.views; ++v) out.views[v] = job.data[v] + plane * slot;
    for (int64_t c = job.slot_begin[slot]; c < job.slot_begin[slot + 1]; ++c) {
      if (stopping_) return;
      const Candidate cand = Candidate::at(&job.candidates[static_cast<size_t>(c) * DC_CAND_STRIDE]);
      Status status;
      try {
        status = process_sample(cfg_, job.paths.c_str() + job.path_at[static_cast<size_t>(c)], cand, job.seed,
                                job.rank, job.epoch, scratch, out);
      } catch (...) {
        status = kFailed;  // std::bad_alloc on a huge-but-allowed image, or anything unforeseen
        scratch.jpeg.reset();
      }
      job.status[static_cast<size_t>(c)] = status;
      if (status == kOk) {
        info[DC_INFO_CANDIDATE] = c;
        return;
      }
    }
    // No candidate decoded: zeros, so the bytes of the batch stay a function of its inputs.
    for (int v = 0; v < cfg_.views; ++v) std::fill(out.views[v], out.views[v] + plane, 0.0f);
    std::fill(info, info + DC_INFO_STRIDE, -1);
  }

  Config cfg_;
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<std::pair<std::shared_ptr<Job>, int64_t>> queue_;
  std::unordered_map<int64_t, std::shared_ptr<Job>> jobs_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stopping_{false};
  int64_t next_id_ = 1;
};

// Loaders are named by ids. The registry is never destroyed: a static destructor at process exit would join
// worker threads in an unknown order; the OS reclaims them instead.
struct Registry {
  std::mutex mu;
  std::unordered_map<int64_t, std::shared_ptr<Loader>> loaders;
  int64_t next = 1;
};

Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

std::shared_ptr<Loader> find_loader(int64_t id) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.loaders.find(id);
  if (it == r.loaders.end()) throw std::invalid_argument("no loader with id " + std::to_string(id));
  return it->second;
}

at::Tensor batch_tensor(const Config& cfg, int64_t batch, dc_tensor given, const char* what) {
  const std::vector<int64_t> shape{batch, 3, cfg.size, cfg.size};
  if (given != nullptr) {
    const at::Tensor& t = *given;
    if (!t.device().is_cpu() || t.scalar_type() != at::kFloat || !t.is_contiguous() ||
        t.sizes() != at::IntArrayRef(shape)) {
      throw std::invalid_argument(std::string(what) + " must be a contiguous CPU float32 tensor of shape (" +
                                  std::to_string(batch) + ", 3, " + std::to_string(cfg.size) + ", " +
                                  std::to_string(cfg.size) + ")");
    }
    return t;  // shares the storage and keeps it alive until the job is collected
  }
  auto options = at::TensorOptions().dtype(at::kFloat);
  // Pinned host memory makes the host-to-device copy asynchronous; only a CUDA build can allocate it.
  if (cfg.pin && at::hasCUDA()) options = options.pinned_memory(true);
  return at::empty(shape, options);
}

}  // namespace dc::data

using dc::data::Config;

extern "C" {

int64_t dc_loader_new(const double* config, int64_t n_config) {
  DC_GUARD_BEGIN
  const Config cfg = Config::parse(config, n_config);
  auto loader = std::make_shared<dc::data::Loader>(cfg);
  dc::data::Registry& r = dc::data::registry();
  std::lock_guard<std::mutex> lock(r.mu);
  const int64_t id = r.next++;
  r.loaders.emplace(id, std::move(loader));
  return id;
  DC_GUARD_END(-1)
}

int32_t dc_loader_free(int64_t loader) {
  DC_GUARD_BEGIN
  std::shared_ptr<dc::data::Loader> held;
  {
    dc::data::Registry& r = dc::data::registry();
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.loaders.find(loader);
    if (it == r.loaders.end()) throw std::invalid_argument("no loader with id " + std::to_string(loader));
    held = std::move(it->second);
    r.loaders.erase(it);
  }
  held->shutdown();  // outside the registry lock: joining waits for the current images to finish
  return 0;
  DC_GUARD_END(1)
}

int64_t dc_loader_submit(int64_t loader, const char* paths, int64_t paths_nbytes, const int64_t* candidates, int64_t n,
                         const int64_t* slot_begin, int64_t batch, uint64_t seed, int64_t rank, int64_t epoch,
                         dc_tensor u, dc_tensor v) {
  DC_GUARD_BEGIN
  auto held = dc::data::find_loader(loader);
  const Config& cfg = held->config();
  if (batch < 1) throw std::invalid_argument("batch must be >= 1");
  if (n < 0 || (n > 0 && (candidates == nullptr || paths == nullptr))) throw std::invalid_argument("bad candidates");
  if (slot_begin == nullptr) throw std::invalid_argument("slot_begin is NULL");
  if (paths_nbytes < 0 || (paths_nbytes > 0 && paths == nullptr)) throw std::invalid_argument("bad paths buffer");
  auto job = std::make_shared<dc::data::Job>();
  job->paths.assign(paths == nullptr ? "" : paths, static_cast<size_t>(paths_nbytes));
  // n NUL-terminated paths, back to back; never trust a terminator that is not inside the buffer.
  size_t at = 0;
  job->path_at.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const size_t end = job->paths.find('\0', at);
    if (end == std::string::npos) {
      throw std::invalid_argument("paths holds fewer than " + std::to_string(n) + " NUL-terminated strings");
    }
    job->path_at[static_cast<size_t>(i)] = at;
    at = end + 1;
  }
  job->candidates.assign(candidates, candidates + n * DC_CAND_STRIDE);
  for (int64_t i = 0; i < n; ++i) {
    const dc::data::Candidate c = dc::data::Candidate::at(&job->candidates[static_cast<size_t>(i) * DC_CAND_STRIDE]);
    const auto bad = [i](const std::string& what) {
      return std::invalid_argument("candidate " + std::to_string(i) + ": " + what);
    };
    if (c.method != DC_CAND_RAW && c.method != DC_CAND_DEFLATE) {
      throw bad("method must be DC_CAND_RAW (0) or DC_CAND_DEFLATE (8), got " + std::to_string(c.method));
    }
    if ((c.flags & ~static_cast<int64_t>(DC_CAND_ZIP_LOCAL)) != 0) throw bad("unknown flags " + std::to_string(c.flags));
    if (c.size < -1 || c.length < -1) throw bad("size and length must be >= -1");
    if (c.crc < -1 || c.crc > 0xffffffffLL) throw bad("crc32 must be -1 or in [0, 2^32), got " + std::to_string(c.crc));
  }
  job->slot_begin.assign(slot_begin, slot_begin + batch + 1);
  for (int64_t s = 0; s < batch; ++s) {
    if (job->slot_begin[s] < 0 || job->slot_begin[s] > job->slot_begin[s + 1] || job->slot_begin[s + 1] > n) {
      throw std::invalid_argument("slot_begin must be non-decreasing within [0, n]");
    }
  }
  job->batch = batch;
  job->seed = seed;
  job->rank = rank;
  job->epoch = epoch;
  job->tensors[0] = dc::data::batch_tensor(cfg, batch, u, "u");
  job->data[0] = job->tensors[0].data_ptr<float>();
  if (cfg.views == 2) {
    job->tensors[1] = dc::data::batch_tensor(cfg, batch, v, "v");
    job->data[1] = job->tensors[1].data_ptr<float>();
  }
  job->info.assign(static_cast<size_t>(batch) * DC_INFO_STRIDE, -1);
  job->status.assign(static_cast<size_t>(n), -1);
  return held->submit(std::move(job));
  DC_GUARD_END(-1)
}

int32_t dc_loader_wait(int64_t loader, int64_t job) {
  // Runs on a Deno FFI worker thread: the thread-local error message would be lost, so only the status says what
  // happened; dc_loader_collect on the JS thread gives the message.
  try {
    return dc::data::find_loader(loader)->wait(job) ? 0 : 1;
  } catch (...) {
    return 1;
  }
}

int32_t dc_loader_collect(int64_t loader, int64_t job, dc_tensor* out_views, int64_t* out_info, int64_t* out_status) {
  DC_GUARD_BEGIN
  if (out_views == nullptr) throw std::invalid_argument("out_views is NULL");
  auto held = dc::data::find_loader(loader);
  std::shared_ptr<dc::data::Job> done = held->take(job);
  if (out_info != nullptr) std::copy(done->info.begin(), done->info.end(), out_info);
  if (out_status != nullptr) std::copy(done->status.begin(), done->status.end(), out_status);
  out_views[0] = dc::wrap(done->tensors[0]);
  out_views[1] = done->tensors[1].defined() ? dc::wrap(done->tensors[1]) : nullptr;
  return 0;
  DC_GUARD_END(1)
}

int32_t dc_image_decode(const void* data, int64_t nbytes, int64_t max_pixels, int64_t min_side, int32_t alpha,
                        dc_tensor* out) {
  DC_GUARD_BEGIN
  using namespace dc::data;
  if (out == nullptr) throw std::invalid_argument("out is NULL");
  *out = nullptr;
  if (nbytes < 0 || (nbytes > 0 && data == nullptr)) throw std::invalid_argument("bad data buffer");
  if (alpha != 0 && alpha != 1) throw std::invalid_argument("alpha must be 0 (drop) or 1 (composite on black)");
  const auto* bytes = static_cast<const uint8_t*>(data);
  const size_t n = static_cast<size_t>(nbytes);
  Scratch s;
  Header header;
  Status status = read_header(bytes, n, s.jpeg, header);
  if (status == kOk && static_cast<int64_t>(header.width) * header.height > max_pixels) status = kTooLarge;
  int scale_num = 8;
  if (status == kOk && header.format == Format::kJpeg && min_side > 0) {
    const double need = static_cast<double>(min_side);
    scale_num = pick_scale(header.width, header.height, [&](double sw, double sh) { return std::min(sw, sh) >= need; });
  }
  Image image;
  if (status == kOk) status = decode(bytes, n, header, scale_num, alpha, max_pixels, s, image);
  if (status != kOk) {
    dc::set_error(std::string("image_decode: ") + status_name(status));
    return status;
  }
  at::Tensor t = at::empty({image.h, image.w, 3}, at::TensorOptions().dtype(at::kByte));
  std::memcpy(t.data_ptr<uint8_t>(), image.px.data(), image.px.size());
  *out = dc::wrap(t);
  return 0;
  DC_GUARD_END(DC_IMG_FAILED)
}

int32_t dc_crop_params(const double* config, int64_t n_config, int64_t width, int64_t height, uint64_t seed,
                       int64_t count, int64_t* out) {
  DC_GUARD_BEGIN
  const Config cfg = Config::parse(config, n_config);
  if (width < 1 || height < 1 || width > 0x7fffffff || height > 0x7fffffff) {
    throw std::invalid_argument("width and height must be positive 31-bit integers");
  }
  if (count < 0 || (count > 0 && out == nullptr)) throw std::invalid_argument("bad output buffer");
  for (int64_t k = 0; k < count; ++k) {
    dc::data::Rng rng(dc::data::stream_key(seed, 0, 0, k, 0));
    const dc::data::Box b = dc::data::sample_crop(rng, static_cast<int>(width), static_cast<int>(height), cfg);
    int64_t* o = out + k * 5;
    o[0] = b.top, o[1] = b.left, o[2] = b.height, o[3] = b.width, o[4] = b.attempt;
  }
  return 0;
  DC_GUARD_END(1)
}

}  // extern "C"
