// Pure drawing helpers: probabilities → colours → pixels. No DOM here, so the same functions
// serve the big heatmap, the all-heads thumbnails and the text view, and can be checked in Node.

// Viridis, a perceptually uniform and colour-blind-safe scale, as the degree-6 polynomial fit
// published with matplotlib's colormap (error well below one 8-bit step).
const C = [
  [0.2777273272234177, 0.005407344544966578, 0.3340998053353061],
  [0.1050930431085774, 1.404613529898575, 1.384590162594685],
  [-0.3308618287255563, 0.214847559468213, 0.09509516302823659],
  [-4.634230498983486, -5.799100973351585, -19.33244095627987],
  [6.228269936347081, 14.17993336680509, 56.69055261942956],
  [4.776384997670288, -13.74514537774601, -65.35303263337234],
  [-5.435455855934631, 4.645852612178535, 26.3124352495832],
];

export const VIRIDIS = Array.from({ length: 256 }, (_, i) => {
  const t = i / 255;
  return [0, 1, 2].map((ch) => {
    let v = C[6][ch];
    for (let k = 5; k >= 0; k--) v = C[k][ch] + t * v;
    return Math.round(Math.min(1, Math.max(0, v)) * 255);
  });
});

export function colour(t) {
  const c = VIRIDIS[Math.max(0, Math.min(255, Math.round(t * 255)))];
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

/**
 * What is drawn for a pattern: the probabilities, optionally with the first (“sink”) column
 * hidden and each row rescaled over the remaining keys, and a value range for the colour scale.
 */
export function displayMatrix(weights, size, { hideSink = false } = {}) {
  const out = new Float32Array(size * size);
  let max = 0;
  for (let i = 0; i < size; i++) {
    let rowSum = 0;
    for (let j = hideSink ? 1 : 0; j <= i; j++) rowSum += weights[i * size + j];
    const scale = hideSink ? (rowSum > 0 ? 1 / rowSum : 0) : 1;
    for (let j = 0; j <= i; j++) {
      const v = hideSink && j === 0 ? 0 : weights[i * size + j] * scale;
      out[i * size + j] = v;
      if (v > max) max = v;
    }
  }
  return { values: out, max: max || 1 };
}

/** RGBA pixels, one per cell; cells above the diagonal (the future) use `masked`. */
export function toPixels(values, size, max, masked = [0, 0, 0, 0]) {
  const px = new Uint8ClampedArray(size * size * 4);
  for (let i = 0; i < size; i++) {
    for (let j = 0; j < size; j++) {
      const o = (i * size + j) * 4;
      if (j > i) {
        px.set(masked, o);
        continue;
      }
      const c = VIRIDIS[Math.min(255, Math.round((values[i * size + j] / max) * 255))];
      px[o] = c[0];
      px[o + 1] = c[1];
      px[o + 2] = c[2];
      px[o + 3] = 255;
    }
  }
  return px;
}

/** A token label made visible: spaces as ·, newlines as ↵, tabs as →. */
export function showToken(label) {
  return String(label).replace(/ /g, '·').replace(/\n/g, '↵').replace(/\t/g, '→') || '∅';
}
