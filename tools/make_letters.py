#!/usr/bin/env python3
"""Generate a small handwriting-style letters dataset in the EMNIST-letters IDX layout.

For machines without the shared dataset: the demo and tests fall back to this. Glyphs of
handwriting-like fonts from Debian packages are distorted (thickness, rotation, shear,
scale), fitted into 20x20 and centred by mass in 28x28 as MNIST/EMNIST do, so a model and a
loader see the same kind of data as the real thing, only less varied.

    tools/make_letters.py --out DIR [--train 26000] [--test 5200] [--seed 1] [--preview PNG]
    tools/make_letters.py --list-fonts

Writes DIR/letters-{train,test}-{images-idx3,labels-idx1}-ubyte.gz (labels 1..26 = a..z,
upper and lower case share a label; 0 = background, 255 = ink; upright, not transposed)
and DIR/README.txt. Output is byte-identical for the same seed, fonts and library versions,
whatever the number of worker processes.

Needs Debian's python3-pil and python3-numpy (re-executes under /usr/bin/python3 when the
interpreter on PATH lacks them, e.g. a pyenv one).
"""
import os
import sys

try:
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter, ImageFont
except ImportError:
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath(
        "/usr/bin/python3"
    ):
        os.execv("/usr/bin/python3", ["/usr/bin/python3", os.path.abspath(__file__)] + sys.argv[1:])
    sys.exit("make_letters.py needs numpy and PIL: apt-get install python3-numpy python3-pil")

import argparse
import glob
import gzip
import hashlib
import io
import math
import multiprocessing as mp
import struct
import time

SIDE = 28  # output image side
FIT = 20  # the glyph's longer side after fitting, as in MNIST
RENDER_SIZE = 96  # font size for the master glyph: large so distortions stay smooth

# Substrings of paths of handwriting-like fonts in Debian packages (fonts-dkg-handwriting,
# fonts-comic-neue, fonts-humor-sans, fonts-sjfonts, and the ones the shared dataset used).
HANDWRITING = [
    "fifthhorseman/dkg", "comic-neue/ComicNeue", "humor-sans/", "sjfonts/", "bwht/",
    "breip/", "femkeklaver/", "klee/", "rufscript/", "dancingscript/", "DancingScript",
    "yusei-magic/", "urw-base35/Z003",
]


def find_fonts(explicit):
    if explicit:
        fonts = sorted(set(explicit))
        missing = [f for f in fonts if not os.path.isfile(f)]
        if missing:
            sys.exit("font file(s) not found: " + ", ".join(missing))
        return fonts, False
    every = sorted(
        p for ext in ("ttf", "otf", "TTF", "OTF")
        for p in glob.glob(f"/usr/share/fonts/**/*.{ext}", recursive=True)
    )
    hand = [p for p in every if any(k in p for k in HANDWRITING)]
    if hand:
        return hand, False
    # Plain fonts still give a usable (if easier) dataset; symbol/math fonts do not.
    plain = [p for p in every if "DejaVuSans" in p or "DejaVuSerif" in p] or [
        p for p in every if not any(k in p for k in ("lyx/", "Math", "Symbol", "Emoji"))
    ]
    if not plain:
        sys.exit("no TTF/OTF fonts under /usr/share/fonts; install fonts-dkg-handwriting "
                 "fonts-comic-neue fonts-humor-sans fonts-sjfonts")
    print("warning: no handwriting fonts found (apt-get install fonts-dkg-handwriting "
          "fonts-comic-neue fonts-humor-sans fonts-sjfonts); using plain fonts instead",
          file=sys.stderr)
    return plain, True


def split_fonts(fonts):
    """Disjoint train/test fonts, so test accuracy measures unseen 'writers'. Fixed by the
    sorted font list (not the seed), so every seed gives the same split."""
    if len(fonts) < 2:
        return fonts, fonts
    n_test = max(1, round(len(fonts) / 4))
    # Every k-th font rather than the last few: sorted paths group families together, and
    # taking a block would hold out a whole family (e.g. all Comic Neue) from training.
    step = len(fonts) / n_test
    test_idx = {int(i * step + step / 2) for i in range(n_test)}
    test = [f for i, f in enumerate(fonts) if i in test_idx]
    train = [f for i, f in enumerate(fonts) if i not in test_idx]
    return train, test


# ---- per-worker state: fonts are loaded once per process, glyphs rendered on first use ----
_fonts = {}
_glyphs = {}
_notdef = {}


def _font(path):
    if path not in _fonts:
        _fonts[path] = ImageFont.truetype(path, RENDER_SIZE)
    return _fonts[path]


def _render(path, ch):
    font = _font(path)
    box = font.getbbox(ch)
    w, h = max(1, box[2] - box[0]), max(1, box[3] - box[1])
    pad = 4
    img = Image.new("L", (w + 2 * pad, h + 2 * pad), 0)
    ImageDraw.Draw(img).text((pad - box[0], pad - box[1]), ch, fill=255, font=font)
    return img


def glyph(path, ch):
    """The master rendering of ch in the font, or None when the font lacks it (renders as
    the .notdef box, or nothing)."""
    key = (path, ch)
    if key not in _glyphs:
        if path not in _notdef:
            _notdef[path] = np.asarray(_render(path, "\ue000")).tobytes()
        img = _render(path, ch)
        a = np.asarray(img)
        ok = a.max() > 0 and a.tobytes() != _notdef[path]
        _glyphs[key] = img if ok else None
    return _glyphs[key]


def distort(img, rng):
    # Stroke width first, at full resolution, so it behaves like a thicker/thinner pen.
    r = rng.random()
    a = np.asarray(img)
    density = (a > 127).mean()
    if r < 0.35:
        # Bold glyphs are not thickened further: their counters (o, e, a) would fill in.
        if density < 0.22:
            img = img.filter(ImageFilter.MaxFilter(5 if density < 0.12 else 3))
    elif r < 0.55:
        thin = img.filter(ImageFilter.MinFilter(3))
        # Thin only where it keeps the letter: hairline fonts would lose strokes entirely.
        if np.asarray(thin, dtype=np.float32).sum() > 0.5 * np.asarray(img, dtype=np.float32).sum():
            img = thin
    # One affine map for rotation, shear and anisotropic scale: one resampling, less blur.
    theta = math.radians(rng.uniform(-12, 12))
    shear = rng.uniform(-0.3, 0.3)
    sx = rng.uniform(0.8, 1.15)
    sy = rng.uniform(0.85, 1.15)
    c, s = math.cos(theta), math.sin(theta)
    # forward = R @ Shear @ Scale; PIL wants the inverse (output -> input).
    a, b = c * sx, (c * shear - s) * sy
    d, e = s * sx, (s * shear + c) * sy
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    w, h = img.size
    side = int(math.ceil(math.hypot(w, h) * 1.6)) + 4
    cx_in, cy_in, cx_out = w / 2, h / 2, side / 2
    coeffs = (ia, ib, cx_in - ia * cx_out - ib * cx_out,
              id_, ie, cy_in - id_ * cx_out - ie * cx_out)
    return img.transform((side, side), Image.AFFINE, coeffs, resample=Image.BICUBIC)


def to_28x28(img, rng):
    a = np.asarray(img)
    ys, xs = np.nonzero(a > 24)
    if len(xs) == 0:
        return None
    img = img.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    w, h = img.size
    k = FIT / max(w, h)
    nw, nh = max(1, round(w * k)), max(1, round(h * k))
    # Reduce in two steps: BOX averages away the large-scale aliasing, LANCZOS keeps edges.
    if max(w, h) > 4 * FIT:
        img = img.reduce(max(1, int(max(w, h) / (2 * FIT))))
    small = np.asarray(img.resize((nw, nh), Image.LANCZOS), dtype=np.float32)
    small = np.clip(small, 0, 255)
    total = small.sum()
    if total <= 0:
        return None
    yy, xx = np.mgrid[0:nh, 0:nw]
    cy, cx = (yy * small).sum() / total, (xx * small).sum() / total
    # Centre of mass to the image centre (MNIST), clamped so no ink is cut off.
    ox = int(round(SIDE / 2 - 0.5 - cx))
    oy = int(round(SIDE / 2 - 0.5 - cy))
    ox = min(max(ox, 0), SIDE - nw)
    oy = min(max(oy, 0), SIDE - nh)
    out = np.zeros((SIDE, SIDE), np.float32)
    out[oy:oy + nh, ox:ox + nw] = small
    if rng.random() < 0.5:
        out = np.asarray(Image.fromarray(out.astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(rng.uniform(0.3, 0.7))), dtype=np.float32)
    peak = out.max()
    if peak > 0:
        out *= rng.uniform(230, 255) / peak  # pen pressure: the darkest ink varies a little
    ink = out > 0
    out[ink] += rng.normal(0, rng.uniform(0, 8), ink.sum())  # noise on ink only: background stays 0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def make_sample(args):
    seed, split_id, index, label, fonts = args
    # One generator per sample, keyed by (seed, split, index): results do not depend on how
    # samples are spread over worker processes.
    rng = np.random.default_rng([seed, split_id, index])
    letter = chr(ord("a") + label - 1)
    cases = [letter.upper(), letter] if rng.random() < 0.5 else [letter, letter.upper()]
    order = rng.permutation(len(fonts))
    for _attempt in range(20):
        for ch in cases:
            for fi in order:
                g = glyph(fonts[fi], ch)
                if g is None:
                    continue
                img = to_28x28(distort(g, rng), rng)
                if img is not None:
                    return img.tobytes()
            # no font has this case: try the other one
    raise RuntimeError(f"no font can render '{letter}' in either case: {fonts}")


def _work(chunk):
    return [make_sample(a) for a in chunk]


def generate(n, seed, split_id, fonts, pool):
    # Balanced classes: label i % 26 + 1, then a seeded shuffle so classes are interleaved.
    labels = np.arange(n) % 26 + 1
    np.random.default_rng([seed, split_id, 0xABE1]).shuffle(labels)
    tasks = [(seed, split_id, i, int(labels[i]), fonts) for i in range(n)]
    chunk = 400
    chunks = [tasks[i:i + chunk] for i in range(0, n, chunk)]
    images = bytearray()
    for part in (pool.imap(_work, chunks) if pool else map(_work, chunks)):
        for img in part:
            images += img
    return bytes(images), labels.astype(np.uint8).tobytes()


def write_gz(path, payload):
    # mtime=0 and no embedded file name: same bytes on every run.
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as g:
        g.write(payload)
    data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="output directory (created)")
    ap.add_argument("--list-fonts", action="store_true",
                    help="print the train/test font split and exit (status 1 if no fonts)")
    ap.add_argument("--train", type=int, default=26000, help="training samples (default 26000)")
    ap.add_argument("--test", type=int, default=5200, help="test samples (default 5200)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="worker processes (does not change the output)")
    ap.add_argument("--font", action="append", help="use these font files instead of searching")
    ap.add_argument("--preview", help="also write a PNG grid of the first training images")
    a = ap.parse_args()
    if a.train < 1 or a.test < 1:
        ap.error("--train and --test must be positive")

    t0 = time.time()
    fonts, fallback = find_fonts(a.font)
    train_fonts, test_fonts = split_fonts(fonts)
    if a.list_fonts:
        print("train:\n" + "\n".join("  " + f for f in train_fonts))
        print("test:\n" + "\n".join("  " + f for f in test_fonts))
        return
    if not a.out:
        ap.error("--out is required")
    os.makedirs(a.out, exist_ok=True)
    pool = mp.Pool(a.jobs) if a.jobs > 1 else None
    try:
        sums = {}
        for split_id, (split, n, fl) in enumerate(
            [("train", a.train, train_fonts), ("test", a.test, test_fonts)]
        ):
            images, labels = generate(n, a.seed, split_id, fl, pool)
            img_name = f"letters-{split}-images-idx3-ubyte.gz"
            lab_name = f"letters-{split}-labels-idx1-ubyte.gz"
            sums[img_name] = write_gz(os.path.join(a.out, img_name),
                                      struct.pack(">IIII", 0x803, n, SIDE, SIDE) + images)
            sums[lab_name] = write_gz(os.path.join(a.out, lab_name),
                                      struct.pack(">II", 0x801, n) + labels)
            if split == "train" and a.preview:
                write_preview(a.preview, images, labels)
    finally:
        if pool:
            pool.close()
            pool.join()
    elapsed = time.time() - t0

    def balance(n):
        lo, hi = n // 26, -(-n // 26)
        return str(lo) if lo == hi else f"{lo} or {hi}"

    def names(fl):
        return "\n".join("  " + f for f in fl)

    with open(os.path.join(a.out, "README.txt"), "w") as f:
        f.write(f"""Handwriting-style letters, EMNIST-letters layout (generated)

Made by tools/make_letters.py --train {a.train} --test {a.test} --seed {a.seed}
({elapsed:.0f} s, numpy {np.__version__}, Pillow {Image.__version__}).

Gzip'd IDX: images magic 0x00000803 with dims N,28,28; labels magic 0x00000801 with dim N;
raw uint8 after the big-endian header. Labels 1..26 = a..z; upper- and lower-case forms share
a label (case picked at random). Classes balanced ({balance(a.train)} per letter in train,
{balance(a.test)} in test), order shuffled. Pixels: 0 = background, 255 = ink, row-major,
upright (no transpose needed, unlike the official EMNIST files).

Each sample: a glyph rendered at {RENDER_SIZE} px, randomly thickened (max filter) or thinned
(min filter), rotated (+-12 deg), sheared, scaled per axis, cropped to its ink, fitted into
{FIT}x{FIT} keeping its aspect ratio, centred by centre of mass in 28x28 (as MNIST), sometimes
lightly blurred, ink peak 230..255, light noise on ink pixels only.

{'Train and test use disjoint fonts.' if len(fonts) >= 2 else 'Train and test use the same font: only one was found.'}
{'WARNING: no handwriting fonts were installed; plain fonts were used.' if fallback else ''}
Train fonts ({len(train_fonts)}):
{names(train_fonts)}
Test fonts ({len(test_fonts)}):
{names(test_fonts)}

sha256:
""" + "".join(f"  {v}  {k}\n" for k, v in sums.items()))
    print(f"wrote {a.train} train + {a.test} test samples to {a.out} in {elapsed:.1f} s "
          f"({len(train_fonts)} train / {len(test_fonts)} test fonts)")


def write_preview(path, images, labels, cols=26, rows=12):
    lab = np.frombuffer(labels, np.uint8)
    n = min(len(lab), cols * rows * 4)
    arr = np.frombuffer(images, np.uint8)[: n * SIDE * SIDE].reshape(n, SIDE, SIDE)
    # One column per letter, the first `rows` samples of each: easy to eyeball.
    per_col = {}
    grid = np.full((rows * (SIDE + 2), cols * (SIDE + 2)), 64, np.uint8)
    for i in range(n):
        c = int(lab[i]) - 1
        r = per_col.get(c, 0)
        if r >= rows:
            continue
        per_col[c] = r + 1
        grid[r * (SIDE + 2):r * (SIDE + 2) + SIDE, c * (SIDE + 2):c * (SIDE + 2) + SIDE] = arr[i]
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


if __name__ == "__main__":
    main()
