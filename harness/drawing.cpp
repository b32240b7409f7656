#include "drawing.hpp"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

namespace nnpar {

namespace {

// Pillow's 8-bit resampling keeps coefficients in this many fractional bits.
constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr double kLanczosSupport = 3.0;

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= std::numbers::pi;
  return std::sin(x) / x;
}

double lanczos(double x) { return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0; }

struct Taps {
  std::vector<int> first;                  // first input index per output index
  std::vector<std::vector<std::int32_t>> weights;
};

// Pillow's precompute_coeffs followed by normalize_coeffs_8bpc, so the rounding is the same.
Taps lanczos_taps(int in_size, int out_size) {
  const double scale = double(in_size) / double(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = kLanczosSupport * filter_scale;
  Taps taps;
  taps.first.resize(out_size);
  taps.weights.resize(out_size);
  for (int out = 0; out < out_size; ++out) {
    const double center = (out + 0.5) * scale;
    const int first = std::max(int(center - support + 0.5), 0);
    const int last = std::min(int(center + support + 0.5), in_size);
    std::vector<double> w;
    double sum = 0;
    for (int i = first; i < last; ++i) {
      w.push_back(lanczos((i - center + 0.5) / filter_scale));
      sum += w.back();
    }
    auto& fixed = taps.weights[out];
    for (double v : w) {
      if (sum != 0.0) v /= sum;
      const double scaled = v * double(1 << kPrecisionBits);
      fixed.push_back(v < 0 ? std::int32_t(-0.5 + scaled) : std::int32_t(0.5 + scaled));
    }
    taps.first[out] = first;
  }
  return taps;
}

std::uint8_t clip8(std::int64_t v) {
  if (v >= (std::int64_t(1) << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return std::uint8_t(v >> kPrecisionBits);
}

// One pass along x (horizontal) or y, rounding to 8 bits like Pillow does between passes.
InkImage resample_axis(const InkImage& in, int out_size, bool horizontal) {
  const int in_size = horizontal ? in.width : in.height;
  const Taps taps = lanczos_taps(in_size, out_size);
  InkImage out(horizontal ? out_size : in.width, horizontal ? in.height : out_size);
  const int lines = horizontal ? in.height : in.width;
  for (int line = 0; line < lines; ++line)
    for (int o = 0; o < out_size; ++o) {
      std::int64_t sum = std::int64_t(1) << (kPrecisionBits - 1);
      const auto& w = taps.weights[o];
      for (std::size_t k = 0; k < w.size(); ++k) {
        const int i = taps.first[o] + int(k);
        sum += std::int64_t(horizontal ? in.at(i, line) : in.at(line, i)) * w[k];
      }
      (horizontal ? out.at(o, line) : out.at(line, o)) = clip8(sum);
    }
  return out;
}

std::uint8_t luma(std::uint8_t r, std::uint8_t g, std::uint8_t b) {
  // Pillow's L = R*299/1000 + G*587/1000 + B*114/1000, in its 16-bit fixed point.
  return std::uint8_t((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16);
}

}  // namespace

InkImage reduce_box(const InkImage& in, int factor) {
  if (factor <= 1) return in;
  InkImage out((in.width + factor - 1) / factor, (in.height + factor - 1) / factor);
  for (int oy = 0; oy < out.height; ++oy)
    for (int ox = 0; ox < out.width; ++ox) {
      const int x0 = ox * factor, y0 = oy * factor;
      const int x1 = std::min(x0 + factor, in.width), y1 = std::min(y0 + factor, in.height);
      const std::uint32_t count = std::uint32_t((x1 - x0) * (y1 - y0));
      std::uint32_t sum = count / 2;
      for (int y = y0; y < y1; ++y)
        for (int x = x0; x < x1; ++x) sum += in.at(x, y);
      // Pillow divides by multiplying with a float-computed reciprocal; its results differ
      // from exact rounding by one level now and then, and the dataset was made with them.
      const auto multiplier = std::uint32_t(4294967296.0f / float(256 * count));
      out.at(ox, oy) = std::uint8_t(std::uint32_t(sum * multiplier) >> 24);
    }
  return out;
}

InkImage resize_lanczos(const InkImage& in, int width, int height) {
  if (width < 1 || height < 1) throw std::invalid_argument("resize_lanczos: empty target size");
  InkImage out = in;
  if (width != in.width) out = resample_axis(out, width, /*horizontal=*/true);
  if (height != in.height) out = resample_axis(out, height, /*horizontal=*/false);
  return out;
}

InkImage ink_from_png(std::string_view bytes, int max_side) {
  if (bytes.size() < 8 || png_sig_cmp(reinterpret_cast<png_const_bytep>(bytes.data()), 0, 8) != 0)
    throw ImageError("the body is not a PNG image (no PNG signature)");
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&image, bytes.data(), bytes.size()))
    throw ImageError(std::string("cannot read the PNG: ") + image.message);
  if (int(image.width) > max_side || int(image.height) > max_side || image.width == 0 || image.height == 0) {
    const std::string size = std::to_string(image.width) + "x" + std::to_string(image.height);
    png_image_free(&image);
    throw ImageError("the PNG is " + size + "; at most " + std::to_string(max_side) + "x" +
                     std::to_string(max_side) + " pixels are accepted");
  }
  // 8-bit sRGB RGBA whatever the file holds; libpng converts palettes, gray and 16-bit.
  image.format = PNG_FORMAT_RGBA;
  std::vector<std::uint8_t> rgba(PNG_IMAGE_SIZE(image));
  if (!png_image_finish_read(&image, nullptr, rgba.data(), 0, nullptr)) {
    const std::string message = image.message;
    png_image_free(&image);
    throw ImageError("cannot decode the PNG: " + message);
  }
  const int w = int(image.width), h = int(image.height);
  png_image_free(&image);

  auto pixel = [&](int x, int y) { return &rgba[(std::size_t(y) * std::size_t(w) + std::size_t(x)) * 4]; };
  double border_alpha = 0, border_luma = 0;
  std::size_t border = 0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      if (y != 0 && y != h - 1 && x != 0 && x != w - 1) continue;
      const std::uint8_t* p = pixel(x, y);
      border_alpha += p[3];
      border_luma += luma(p[0], p[1], p[2]);
      ++border;
    }
  border_alpha /= double(border);
  border_luma /= double(border);
  const bool alpha_is_ink = border_alpha < 128;
  const bool light_background = border_luma >= 128;

  InkImage ink(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const std::uint8_t* p = pixel(x, y);
      const std::uint8_t l = luma(p[0], p[1], p[2]);
      ink.at(x, y) = alpha_is_ink ? p[3] : light_background ? std::uint8_t(255 - l) : l;
    }
  return ink;
}

LetterImage letter_image(const InkImage& drawing) {
  int x0 = drawing.width, y0 = drawing.height, x1 = -1, y1 = -1;
  for (int y = 0; y < drawing.height; ++y)
    for (int x = 0; x < drawing.width; ++x)
      if (drawing.at(x, y) > kInkThreshold) {
        x0 = std::min(x0, x), x1 = std::max(x1, x);
        y0 = std::min(y0, y), y1 = std::max(y1, y);
      }
  if (x1 < 0) throw ImageError("the drawing is empty: no pixel has ink above " + std::to_string(kInkThreshold) + " of 255");

  InkImage crop(x1 - x0 + 1, y1 - y0 + 1);
  for (int y = 0; y < crop.height; ++y)
    for (int x = 0; x < crop.width; ++x) crop.at(x, y) = drawing.at(x0 + x, y0 + y);

  const int longer = std::max(crop.width, crop.height);
  const double k = double(kLetterFit) / double(longer);
  // Python's round() (ties to even), as the generator used.
  const int fit_w = std::max(1, int(std::nearbyint(crop.width * k)));
  const int fit_h = std::max(1, int(std::nearbyint(crop.height * k)));
  // Large drawings are box-averaged first, then resampled: one Lanczos pass over a big
  // reduction would alias; the generator does the same two steps.
  if (longer > 4 * kLetterFit) crop = reduce_box(crop, std::max(1, int(double(longer) / (2 * kLetterFit))));
  const InkImage small = resize_lanczos(crop, fit_w, fit_h);

  double total = 0, sum_x = 0, sum_y = 0;
  for (int y = 0; y < small.height; ++y)
    for (int x = 0; x < small.width; ++x) {
      const double v = small.at(x, y);
      total += v, sum_x += x * v, sum_y += y * v;
    }
  if (total <= 0) throw ImageError("the drawing is empty after fitting it into 20x20 pixels");
  // The centre of mass goes to the image centre, clamped so no ink is cut off.
  const double centre = kLetterSide / 2.0 - 0.5;
  const int ox = std::clamp(int(std::nearbyint(centre - sum_x / total)), 0, kLetterSide - small.width);
  const int oy = std::clamp(int(std::nearbyint(centre - sum_y / total)), 0, kLetterSide - small.height);

  const std::uint8_t peak = *std::max_element(small.pixels.begin(), small.pixels.end());
  // The generator's darkest ink is 230..255 (pen pressure); the strongest pressure is used here.
  const auto gain = float(255.0 / double(peak));  // numpy: a float64 scalar cast to float32
  LetterImage out{};
  for (int y = 0; y < small.height; ++y)
    for (int x = 0; x < small.width; ++x) {
      const float v = std::nearbyint(float(small.at(x, y)) * gain);
      out[std::size_t(oy + y) * kLetterSide + std::size_t(ox + x)] = std::uint8_t(std::clamp(v, 0.0f, 255.0f));
    }
  return out;
}

}  // namespace nnpar
