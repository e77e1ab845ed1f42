//! A fast check that a file already verified by SHA-256 has not changed since: two interleaved
//! multiply-xor hashes over little-endian 32-bit words, `a` over the even words and `b` over the
//! odd ones, then `b` over the bytes after the last whole word. Each step is invertible in the
//! state and in the word, so a change to any single word always changes the result. It is not a
//! defence against tampering (the SHA-256 was, on download).
//!
//! The browser keeps it with each verified file in the Cache API and checks it on every warm
//! load, as the file streams into wasm memory: Chromium's SHA-256 of 143 MB took 300–400 ms of
//! the calling thread (PERFORMANCE.md), this runs while the next piece is read. Fed in pieces of any size, it gives the value of the whole file,
//! the same as the page's earlier JavaScript version, so entries stored by it still match.

const A_START: u32 = 0x811c_9dc5;
const B_START: u32 = 0x2545_f491;
const A_FACTOR: u32 = 0x0100_0193;
const B_FACTOR: u32 = 0x9e37_79b1;

#[derive(Clone, Debug)]
pub struct Fingerprint {
    a: u32,
    b: u32,
    /// Bytes seen so far.
    at: usize,
    /// Where the whole words end: the bytes after it (fewer than four) go to `b` one by one.
    words_end: usize,
    /// The current word's bytes so far, when a piece ended inside it.
    partial: [u8; 4],
}

impl Fingerprint {
    /// For a file of `len` bytes (the length is part of the value).
    pub fn new(len: usize) -> Self {
        Fingerprint { a: A_START ^ len as u32, b: B_START, at: 0, words_end: len & !3, partial: [0; 4] }
    }

    /// The fingerprint of `bytes` in one piece.
    pub fn of(bytes: &[u8]) -> String {
        let mut f = Fingerprint::new(bytes.len());
        f.update(bytes);
        f.hex()
    }

    /// Takes the file's next bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        // Finish a word a previous piece began (or go on with the bytes after the last word).
        while self.at % 4 != 0 && !bytes.is_empty() {
            self.byte(bytes[0]);
            bytes = &bytes[1..];
        }
        // Whole words: the hot loop of a 143 MB file.
        let (words, rest) = bytes.split_at(bytes.len().min(self.words_end.saturating_sub(self.at)) & !3);
        self.words(words);
        // The start of the next word, or the bytes after the last whole one.
        rest.iter().for_each(|&b| self.byte(b));
    }

    /// One byte: part of a word, or, past the last whole word, straight into `b`.
    fn byte(&mut self, byte: u8) {
        if self.at < self.words_end {
            self.partial[self.at % 4] = byte;
            if self.at % 4 == 3 {
                self.mix(u32::from_le_bytes(self.partial), self.at / 4);
            }
        } else {
            self.b = (self.b ^ byte as u32).wrapping_mul(B_FACTOR);
        }
        self.at += 1;
    }

    /// Word-aligned bytes (a multiple of four) starting at `self.at`.
    fn words(&mut self, mut bytes: &[u8]) {
        let taken = bytes.len();
        let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if (self.at / 4) % 2 == 1 && !bytes.is_empty() {
            self.mix(word(bytes), self.at / 4); // an odd word first: b's
            bytes = &bytes[4..];
        }
        let (mut a, mut b) = (self.a, self.b);
        let pairs = bytes.chunks_exact(8);
        let last = pairs.remainder();
        for pair in pairs {
            a = (a ^ word(&pair[..4])).wrapping_mul(A_FACTOR);
            b = (b ^ word(&pair[4..])).wrapping_mul(B_FACTOR);
        }
        if !last.is_empty() {
            a = (a ^ word(last)).wrapping_mul(A_FACTOR);
        }
        (self.a, self.b) = (a, b);
        self.at += taken;
    }

    fn mix(&mut self, word: u32, index: usize) {
        if index % 2 == 0 {
            self.a = (self.a ^ word).wrapping_mul(A_FACTOR);
        } else {
            self.b = (self.b ^ word).wrapping_mul(B_FACTOR);
        }
    }

    /// The value, as the 16 hex digits stored with a cached file (`a` then `b`).
    pub fn hex(&self) -> String {
        format!("{:08x}{:08x}", self.a, self.b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 37 + 11) as u8).collect()
    }

    #[test]
    fn equals_the_value_the_page_stored_before() {
        // From the page's JavaScript `fingerprint` (weights.js up to 43642c1), on `sample(len)`.
        let stored = [
            (0, "811c9dc52545f491"),
            (1, "811c9dc46f10e87a"),
            (3, "811c9dc67f6a63cf"),
            (4, "5efc94fe2545f491"),
            (5, "5ffc9691e8ba5bae"),
            (7, "5dfc936b67fa69b3"),
            (8, "5afc8eb28bc5d7ae"),
            (9, "5bfc90455f6e488d"),
            (17, "0d8a0b9a5afaac22"),
            (1000, "16426186b6179e2e"),
        ];
        for (len, hex) in stored {
            assert_eq!(Fingerprint::of(&sample(len)), hex, "{len} bytes");
        }
    }

    #[test]
    fn pieces_of_any_size_give_the_whole_files_value() {
        for len in 0..42 {
            let bytes = sample(len);
            let whole = Fingerprint::of(&bytes);
            for i in 0..=len {
                for j in i..=len {
                    let mut f = Fingerprint::new(len);
                    for piece in [&bytes[..i], &bytes[i..j], &bytes[j..]] {
                        f.update(piece);
                    }
                    assert_eq!((f.hex(), f.at), (whole.clone(), len), "{len} bytes cut at {i} and {j}");
                }
            }
        }
    }

    #[test]
    fn a_change_to_any_word_or_trailing_byte_changes_it() {
        let bytes = sample(4099);
        let whole = Fingerprint::of(&bytes);
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert_ne!(Fingerprint::of(&damaged), whole, "byte {i} changed");
        }
        assert_ne!(Fingerprint::of(&bytes[..4098]), whole, "one byte short");
    }
}
