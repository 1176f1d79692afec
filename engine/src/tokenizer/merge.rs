//! BPE merging in O(n log n) without allocating.
//!
//! The rule is llama2.c's: while some adjacent pair concatenates to a piece
//! of the vocabulary scoring above [`NO_MERGE_SCORE`], merge the pair whose
//! piece scores highest, the leftmost one on ties. llama2.c rescans every
//! pair after every merge (quadratic); here, as in sentencepiece, the tokens
//! form a doubly linked list over their original slots and the mergeable
//! pairs wait in a binary max-heap, so one merge costs O(log n).
//!
//! Heap entries are never updated in place: a merge makes the entries of
//! the pairs it touched stale, and a stale entry is recognised, and dropped,
//! when it reaches the top. A pair's entry is keyed by the slot of its left
//! token, and slots keep the text's order, so "smallest slot" is "leftmost"
//! at every step.
//!
//! Staleness needs no byte comparison: a slot's piece only ever changes by
//! growing (a merge appends the right neighbour's piece, never empty: only
//! slot 0, BOS, can hold an empty piece, and it is never a right
//! neighbour), so each change to the pair at slot `l` lengthens the bytes
//! of its two pieces. An entry is current exactly when those bytes are as
//! long as its merged piece.
#![forbid(unsafe_code)]

use crate::error::Error;
use crate::format::Vocab;

/// llama2.c starts its search for the best merge at this score with a strict
/// `>`, so a piece scoring at or below it is never merged.
const NO_MERGE_SCORE: f32 = -1e10;

/// Longest piece a merge can produce. Merging looks a concatenation of two
/// pieces up in a stack buffer of this many bytes, so a vocabulary piece
/// longer than this is never the result of a merge (it can still be looked
/// up as a single code point, which is at most 4 bytes). Real vocabularies
/// stay far below it (llama2.c's tok512 tops out at 7 bytes).
pub const MAX_MERGED_PIECE_BYTES: usize = 256;

/// Scratch words per unmerged token: the `next` and `prev` links and a heap
/// entry of three words (score key, inverted left slot, merged piece id).
const WORDS_PER_TOKEN: usize = 5;

/// Most entries of the pair cache (three words each).
const MAX_PAIR_CACHE: usize = 4096;

/// Entries of the pair cache for `n` unmerged tokens: the largest power of
/// two up to `n`, at most [`MAX_PAIR_CACHE`].
const fn pair_cache_entries(n: usize) -> usize {
    if n < 2 {
        return 0;
    }
    let power = 1 << (usize::BITS - 1 - n.leading_zeros());
    if power < MAX_PAIR_CACHE {
        power
    } else {
        MAX_PAIR_CACHE
    }
}

/// Words of scratch [`encode_with_scratch`](super::encode_with_scratch)
/// needs to merge `n` unmerged Bpe tokens (`scratch_words(max_tokens(text,
/// add_bos))` is always enough): five per token plus a cache of three per
/// token up to 4,096 tokens, so at most eight per token. `const` so that
/// firmware can size a static buffer.
pub const fn scratch_words(n: usize) -> usize {
    n.saturating_mul(WORDS_PER_TOKEN)
        .saturating_add(3 * pair_cache_entries(n))
}

/// Most unmerged tokens one call can merge: slots are `u32`, and `u32::MAX`
/// marks "no neighbour".
pub(super) const MAX_TOKENS: usize = u32::MAX as usize - 1;

/// A link to no slot, and a slot whose token was merged into its left
/// neighbour (token ids are below `limits::MAX_VOCAB`, far from it).
const NONE: u32 = u32::MAX;
const DEAD: u32 = u32::MAX;
const _: () = assert!(crate::config::limits::MAX_VOCAB < DEAD);

/// Merges `tokens` in place and returns how many remain, at its front.
/// `scratch` holds at least `scratch_words(tokens.len())` words and
/// `tokens.len() <= MAX_TOKENS` (the caller checks both).
///
/// Tokens that can never merge (see [`Barriers`]) cut the text into
/// segments that merge independently, each on a heap of its own: the same
/// result (merges on either side of such a token never interact, and the
/// global order restricted to one segment is that segment's own order),
/// with heaps small enough to stay in cache.
pub(super) fn merge_pairs(vocab: &Vocab<'_>, tokens: &mut [u32], scratch: &mut [u32]) -> usize {
    let n = tokens.len();
    if n < 2 {
        return n;
    }
    // Links and heap for up to n tokens, then the pair cache.
    let (work, rest) = scratch.split_at_mut(WORDS_PER_TOKEN * n);
    let cache = &mut rest[..3 * pair_cache_entries(n)];
    cache.fill(NONE);
    let mut pairs = PairLookup {
        vocab: *vocab,
        merge_limit: vocab.max_piece_len().min(MAX_MERGED_PIECE_BYTES),
        cache,
    };
    let barriers = Barriers::new(vocab, n);
    let (mut kept, mut start) = (0, 0);
    for slot in 0..=n {
        // Slots 0 and 1 are never barriers: slot 0 (BOS) may hold an empty
        // piece, which merges with slot 1 into slot 1's own piece.
        let barrier = slot < n && slot >= 2 && barriers.holds(vocab, tokens[slot]);
        if slot < n && !barrier {
            continue;
        }
        let survivors = merge_segment(&mut pairs, &mut tokens[start..slot], work);
        tokens.copy_within(start..start + survivors, kept);
        kept += survivors;
        if barrier {
            tokens[kept] = tokens[slot];
            kept += 1;
            start = slot + 1;
        }
    }
    kept
}

/// Merges the segment `tokens` in place with the links and heap in `work`
/// (`WORDS_PER_TOKEN × tokens.len()` words or more) and returns how many
/// tokens remain, at its front.
fn merge_segment(pairs: &mut PairLookup<'_, '_>, tokens: &mut [u32], work: &mut [u32]) -> usize {
    let n = tokens.len();
    if n < 2 {
        return n;
    }
    let (links, heap) = work.split_at_mut(2 * n);
    let (next, prev) = links.split_at_mut(n);
    for i in 0..n {
        next[i] = if i + 1 < n { (i + 1) as u32 } else { NONE };
        prev[i] = if i > 0 { (i - 1) as u32 } else { NONE };
    }
    let mut m = Merger {
        pairs,
        tokens,
        next,
        prev,
        heap: Heap {
            entries: &mut heap[..ENTRY_WORDS * n],
            len: 0,
        },
    };
    // Every mergeable pair once, then one O(n) heapify.
    for left in 0..n - 1 {
        if let Some(entry) = m.candidate(left as u32, m.tokens[left], m.tokens[left + 1]) {
            m.heap.set(m.heap.len, entry);
            m.heap.len += 1;
        }
    }
    m.heap.heapify();
    while let Some(entry) = m.heap.pop() {
        if m.is_current(entry) {
            m.merge(entry);
        }
    }
    // Gather the surviving tokens, in order, at the front.
    let mut count = 0;
    let mut slot = 0u32;
    while slot != NONE {
        m.tokens[count] = m.tokens[slot as usize];
        count += 1;
        slot = m.next[slot as usize];
    }
    count
}

/// ASCII characters whose token can never merge in a vocabulary: no piece
/// is longer than the token's piece and begins or ends with it (a merge
/// makes a piece that begins with its left piece and ends with its right
/// one). Such a token stays as it is wherever it is (past slot 1), so no
/// merge crosses it: in tok512, the newline's `<0x0A>` is one.
struct Barriers {
    /// Bit `b`: some piece longer than one byte begins or ends with byte `b`.
    chars: u128,
    /// Bit `b`: some piece longer than six bytes begins or ends with `<0xBB>`.
    byte_pieces: u128,
}

impl Barriers {
    /// The barriers of `vocab`, found in one pass over its pieces when a
    /// text of `n` tokens is long enough to repay it; none otherwise.
    fn new(vocab: &Vocab<'_>, n: usize) -> Barriers {
        let mut b = Barriers {
            chars: 0,
            byte_pieces: 0,
        };
        if n < 64 || n < vocab.len() as usize / 8 {
            b.chars = u128::MAX;
            b.byte_pieces = u128::MAX;
            return b;
        }
        let bit = |byte: u8| 1u128.checked_shl(byte as u32).unwrap_or(0);
        for id in 0..vocab.len() {
            let piece = vocab.piece(id);
            let len = piece.len();
            if len > 1 {
                b.chars |= bit(piece[0]) | bit(piece[len - 1]);
            }
            if len > 6 {
                for end in [&piece[..6], &piece[len - 6..]] {
                    if let Some(byte) = super::byte_piece_value(end) {
                        b.byte_pieces |= bit(byte);
                    }
                }
            }
        }
        b
    }

    /// Whether `token` never merges.
    fn holds(&self, vocab: &Vocab<'_>, token: u32) -> bool {
        let piece = vocab.piece(token);
        let clear = |mask: u128, byte: u8| byte < 128 && mask & 1 << byte == 0;
        match piece {
            [byte] => clear(self.chars, *byte),
            _ => super::byte_piece_value(piece).is_some_and(|b| clear(self.byte_pieces, b)),
        }
    }
}

/// What pairs of ids merge into, with a cache: text repeats its pairs, and
/// a lookup is a binary search.
struct PairLookup<'v, 'w> {
    vocab: Vocab<'v>,
    /// Longest concatenation that can be a piece.
    merge_limit: usize,
    /// `[3 × entries]` a direct-mapped cache: left id, right id, merged id
    /// or `NONE`.
    cache: &'w mut [u32],
}

impl PairLookup<'_, '_> {
    /// The piece `left ++ right` concatenates to, if the vocabulary has it
    /// with a score that lets it merge (the smallest such id, as `find`).
    fn merged(&mut self, left: u32, right: u32) -> Option<u32> {
        let hash = (left.wrapping_mul(0x9E37_79B1) ^ right).wrapping_mul(0x85EB_CA6B);
        let at = 3 * (hash as usize & (self.cache.len() / 3 - 1));
        let cached = &self.cache[at..at + 3];
        let merged = if cached[0] == left && cached[1] == right {
            cached[2]
        } else {
            let merged = self.lookup(left, right).unwrap_or(NONE);
            self.cache[at..at + 3].copy_from_slice(&[left, right, merged]);
            merged
        };
        (merged != NONE).then_some(merged)
    }

    fn lookup(&self, left: u32, right: u32) -> Option<u32> {
        let (l, r) = (self.vocab.piece(left), self.vocab.piece(right));
        let len = l.len() + r.len();
        if len > self.merge_limit {
            return None; // longer than any piece: cannot be one
        }
        // Concatenation of the two pieces: [len] bytes used.
        let mut concat = [0u8; MAX_MERGED_PIECE_BYTES];
        concat[..l.len()].copy_from_slice(l);
        concat[l.len()..len].copy_from_slice(r);
        let merged = self.vocab.find(&concat[..len])?;
        (self.vocab.score(merged) > NO_MERGE_SCORE).then_some(merged)
    }
}

/// The token list and its pending merges.
struct Merger<'a, 'v, 'c> {
    pairs: &'a mut PairLookup<'v, 'c>,
    /// `[n]` token ids by slot, `DEAD` for merged-away slots.
    tokens: &'a mut [u32],
    /// `[n]` slot of the next live token, `NONE` at the end.
    next: &'a mut [u32],
    /// `[n]` slot of the previous live token, `NONE` at the start.
    prev: &'a mut [u32],
    heap: Heap<'a>,
}

impl Merger<'_, '_, '_> {
    /// The heap entry for the pair at slot `slot` of tokens `left` and
    /// `right`, if they merge.
    fn candidate(&mut self, slot: u32, left: u32, right: u32) -> Option<Entry> {
        let merged = self.pairs.merged(left, right)?;
        Some(Entry::new(self.pairs.vocab.score(merged), slot, merged))
    }

    /// Whether `entry` still describes a pair of the list: its left slot is
    /// live, has a right neighbour, and their pieces are as long as the
    /// merged one (see the module comment: then they are the pieces the
    /// entry was made from).
    fn is_current(&self, entry: Entry) -> bool {
        let left = entry.left() as usize;
        let left_token = self.tokens[left];
        let right = self.next[left];
        if left_token == DEAD || right == NONE {
            return false;
        }
        let len = |id: u32| self.pairs.vocab.piece(id).len();
        len(left_token) + len(self.tokens[right as usize]) == len(entry.merged)
    }

    /// Merges the pair of `entry` and queues the two pairs the merged token
    /// makes with its neighbours.
    fn merge(&mut self, entry: Entry) {
        let (left, merged) = (entry.left(), entry.merged);
        let l = left as usize;
        let right = self.next[l] as usize;
        let after = self.next[right];
        self.tokens[l] = merged;
        self.tokens[right] = DEAD;
        self.next[l] = after;
        if after != NONE {
            self.prev[after as usize] = left;
        }
        let before = self.prev[l];
        if before != NONE {
            if let Some(e) = self.candidate(before, self.tokens[before as usize], merged) {
                self.push(e);
            }
        }
        if after != NONE {
            if let Some(e) = self.candidate(left, merged, self.tokens[after as usize]) {
                self.push(e);
            }
        }
    }

    /// Queues a pair, first dropping the stale entries when the heap is full.
    ///
    /// Room always remains after that: a live slot has at most one current
    /// entry (each push for a slot follows a merge that lengthened the bytes
    /// of its pair, by a piece that is never empty: only slot 0, BOS, can
    /// hold an empty piece, and it is never a right neighbour), so current
    /// entries are at most the n − 2 pairs left after the first merge, and
    /// the heap holds n.
    fn push(&mut self, entry: Entry) {
        if self.heap.len * ENTRY_WORDS == self.heap.entries.len() {
            self.drop_stale();
        }
        self.heap.push(entry);
    }

    /// Removes every stale entry and restores the heap order: O(n). It runs
    /// only when the heap is full. A run after merge k leaves at most the
    /// n − k − 1 current pairs, so k + 1 free entries, and a merge adds at
    /// most one net entry: the next run comes k + 1 merges later at the
    /// earliest, and there are O(log n) runs.
    fn drop_stale(&mut self) {
        let mut kept = 0;
        for i in 0..self.heap.len {
            let entry = self.heap.get(i);
            if self.is_current(entry) {
                self.heap.set(kept, entry);
                kept += 1;
            }
        }
        self.heap.len = kept;
        self.heap.heapify();
    }
}

/// Words of one heap entry.
const ENTRY_WORDS: usize = 3;

/// A pending merge: the pair at slot `left()` becomes piece `merged`.
#[derive(Clone, Copy)]
struct Entry {
    /// The merged piece's score in its high 32 bits, mapped so that integer
    /// order is score order, and `!left` in its low 32 bits: the larger key
    /// merges first, the leftmost pair on ties.
    key: u64,
    merged: u32,
}

impl Entry {
    fn new(score: f32, left: u32, merged: u32) -> Entry {
        // +0.0 for -0.0, which compares equal to it; then negative scores
        // (sign bit set) have every bit flipped, positive ones the sign bit
        // set: unsigned order is float order for finite scores.
        let bits = (score + 0.0).to_bits();
        let ordered = if bits >> 31 == 1 {
            !bits
        } else {
            bits | 1 << 31
        };
        Entry {
            key: (ordered as u64) << 32 | !left as u64,
            merged,
        }
    }

    fn left(&self) -> u32 {
        !(self.key as u32)
    }
}

/// A binary max-heap of entries by key, stored as triples of words.
struct Heap<'w> {
    /// `[ENTRY_WORDS × capacity]` words; the first `ENTRY_WORDS × len` hold
    /// entries: key high, key low, merged.
    entries: &'w mut [u32],
    len: usize,
}

impl Heap<'_> {
    fn get(&self, i: usize) -> Entry {
        let e = &self.entries[ENTRY_WORDS * i..ENTRY_WORDS * i + ENTRY_WORDS];
        Entry {
            key: (e[0] as u64) << 32 | e[1] as u64,
            merged: e[2],
        }
    }

    fn set(&mut self, i: usize, entry: Entry) {
        let e = &mut self.entries[ENTRY_WORDS * i..ENTRY_WORDS * i + ENTRY_WORDS];
        e[0] = (entry.key >> 32) as u32;
        e[1] = entry.key as u32;
        e[2] = entry.merged;
    }

    fn key(&self, i: usize) -> u64 {
        (self.entries[ENTRY_WORDS * i] as u64) << 32 | self.entries[ENTRY_WORDS * i + 1] as u64
    }

    fn push(&mut self, entry: Entry) {
        let mut i = self.len;
        if ENTRY_WORDS * (i + 1) > self.entries.len() {
            // Unreachable (see `Merger::push`); losing a candidate would be
            // silent, so this is loud in tests and harmless otherwise.
            debug_assert!(false, "merge heap overflow");
            return;
        }
        self.len += 1;
        // Move parents down until the entry's place is found.
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.key(parent) >= entry.key {
                break;
            }
            self.set(i, self.get(parent));
            i = parent;
        }
        self.set(i, entry);
    }

    fn pop(&mut self) -> Option<Entry> {
        if self.len == 0 {
            return None;
        }
        let top = self.get(0);
        self.len -= 1;
        if self.len > 0 {
            let last = self.get(self.len);
            self.sift_down(0, last);
        }
        Some(top)
    }

    /// Places `entry` at `i` or below, moving larger children up.
    fn sift_down(&mut self, mut i: usize, entry: Entry) {
        loop {
            let a = 2 * i + 1;
            if a >= self.len {
                break;
            }
            let b = a + 1;
            let child = if b < self.len && self.key(b) > self.key(a) {
                b
            } else {
                a
            };
            if self.key(child) <= entry.key {
                break;
            }
            self.set(i, self.get(child));
            i = child;
        }
        self.set(i, entry);
    }

    fn heapify(&mut self) {
        for i in (0..self.len / 2).rev() {
            let entry = self.get(i);
            self.sift_down(i, entry);
        }
    }
}

/// Checks the scratch for `n` unmerged tokens.
pub(super) fn check_scratch(n: usize, scratch: &[u32]) -> Result<(), Error> {
    let needed = scratch_words(n);
    if scratch.len() < needed {
        return Err(Error::BufferTooSmall {
            needed,
            available: scratch.len(),
        });
    }
    Ok(())
}
