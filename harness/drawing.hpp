// Turns a person's drawing into the 28x28 image the model reads, made the way
// tools/make_letters.py made the training images: crop to the ink's bounding box, fit the
// longer side into 20 pixels keeping the aspect ratio (Pillow's box reduce + Lanczos, ported
// so the pixels match the generator's exactly), centre by mass in 28x28, ink peak at 255.
#pragma once
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string_view>
#include <vector>

namespace nnpar {

// A drawing the server cannot use: not a PNG, too large, no ink. The message is for the
// person who sent it.
class ImageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Grayscale ink, row-major: 0 = background, 255 = full ink (the dataset's convention).
struct InkImage {
  int width = 0, height = 0;
  std::vector<std::uint8_t> pixels;
  InkImage() = default;
  InkImage(int w, int h) : width(w), height(h), pixels(std::size_t(w) * std::size_t(h), 0) {}
  std::uint8_t& at(int x, int y) { return pixels[std::size_t(y) * std::size_t(width) + std::size_t(x)]; }
  std::uint8_t at(int x, int y) const { return pixels[std::size_t(y) * std::size_t(width) + std::size_t(x)]; }
};

inline constexpr int kLetterSide = 28;     // the model's input is kLetterSide x kLetterSide
inline constexpr int kLetterFit = 20;      // the ink's longer side after fitting (MNIST's rule)
inline constexpr int kInkThreshold = 24;   // pixels above this count for the bounding box
inline constexpr int kMaxPngSide = 2048;   // larger PNGs are refused before decoding

using LetterImage = std::array<std::uint8_t, kLetterSide * kLetterSide>;

// Decodes a PNG (any colour type and bit depth libpng reads) into ink:
//  - a mostly transparent border (a stroke layer): ink is the alpha channel;
//  - a light border (dark ink on paper, what the drawing page sends): ink = 255 - luma;
//  - a dark border (light ink on black, like the dataset's images): ink = luma.
// Luma is Pillow's convert("L") (ITU-R 601-2). ImageError names what is wrong.
InkImage ink_from_png(std::string_view bytes, int max_side = kMaxPngSide);

// The preprocessing above. ImageError when no pixel exceeds kInkThreshold.
LetterImage letter_image(const InkImage& drawing);

// The steps of letter_image, for tests.
// Pillow's Image.reduce(factor): box averages, partial blocks at the right and bottom edges.
InkImage reduce_box(const InkImage& image, int factor);
// Pillow's Image.resize((width, height), Image.LANCZOS) on an 8-bit image, fixed point and all.
InkImage resize_lanczos(const InkImage& image, int width, int height);

}  // namespace nnpar
