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

/** The three ways to treat the first ("sink") column, as the legend states them. */
export const SINK_MODES = Object.freeze({
  show: 'first token shown; colours scaled to the largest weight',
  hide: 'first token hidden; each row rescaled to sum to 1 over tokens 1…i',
  clip: 'colours scaled to the largest weight outside the first column; brighter first-token cells are clipped to yellow',
});

/** Black or white, whichever contrasts more with colour(t) (WCAG relative luminance): at
 * least 4.6:1 everywhere on viridis. */
export function inkOn(t) {
  const c = VIRIDIS[Math.max(0, Math.min(255, Math.round(t * 255)))];
  const lin = c.map((v) => (v / 255 <= 0.04045 ? v / 255 / 12.92 : ((v / 255 + 0.055) / 1.055) ** 2.4));
  const l = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
  return 1.05 / (l + 0.05) >= (l + 0.05) / 0.05 ? '#fff' : '#000';
}

/**
 * What is drawn for a pattern: the probabilities, and a value range for the colour scale.
 * `sink`: 'show' draws them as they are; 'hide' blanks the first column and rescales each row
 * over the remaining keys; 'clip' keeps the numbers but takes the colour range from the other
 * columns, so a dominant first column no longer darkens everything else.
 */
export function displayMatrix(weights, size, { sink = 'show' } = {}) {
  const out = new Float32Array(size * size);
  let max = 0;
  for (let i = 0; i < size; i++) {
    let rowSum = 0;
    for (let j = sink === 'hide' ? 1 : 0; j <= i; j++) rowSum += weights[i * size + j];
    const scale = sink === 'hide' ? (rowSum > 0 ? 1 / rowSum : 0) : 1;
    for (let j = 0; j <= i; j++) {
      const v = sink === 'hide' && j === 0 ? 0 : weights[i * size + j] * scale;
      out[i * size + j] = v;
      if (v > max && !(sink === 'clip' && j === 0 && i > 0)) max = v;
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
      const c = VIRIDIS[Math.max(0, Math.min(255, Math.round((values[i * size + j] / max) * 255)))];
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
