//! Captions burned into the picture, for callers without a data channel (SIP video phones):
//! text rasterised with a bundled font (DejaVu Sans Bold, Bitstream Vera licence, see
//! `fonts/DejaVu-LICENSE`) onto the I420 frame before it is encoded.

use std::collections::HashMap;

use fontdue::{Font, FontSettings, Metrics};
use telecart_core::VideoFrame;
use telecart_webrtc::datachannel::Highlight;

use crate::{Caption, TranscribeError};

const FONT: &[u8] = include_bytes!("../fonts/DejaVuSans-Bold.ttf");
/// Lines of caption shown at once (the newest words).
const MAX_LINES: usize = 2;
/// Text: white. Highlighted terms: yellow (BT.601 video range).
const TEXT_Y: u8 = 235;
const HIGHLIGHT_YUV: (u8, u8, u8) = (210, 16, 146);

/// Draws captions onto frames. Glyphs are cached per size.
pub struct CaptionBurner {
    font: Font,
    glyphs: HashMap<(char, u32), (Metrics, Vec<u8>)>,
}

impl std::fmt::Debug for CaptionBurner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptionBurner")
            .field("cached_glyphs", &self.glyphs.len())
            .finish_non_exhaustive()
    }
}

/// One laid-out character.
#[derive(Debug, Clone, Copy)]
struct Placed {
    c: char,
    byte: usize,
    line: usize,
    x: f32,
}

/// Where the caption box lies on a frame of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptionBox {
    /// Left edge (pixels).
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl CaptionBurner {
    /// A burner with the bundled font.
    pub fn new() -> Result<Self, TranscribeError> {
        let font = Font::from_bytes(FONT, FontSettings::default())
            .map_err(|e| TranscribeError::Config(format!("bundled caption font: {e}")))?;
        Ok(Self {
            font,
            glyphs: HashMap::new(),
        })
    }

    /// Text size in pixels for a frame height.
    pub fn text_px(frame_height: u32) -> u32 {
        (frame_height / 16).clamp(10, 72)
    }

    fn glyph(&mut self, c: char, px: u32) -> &(Metrics, Vec<u8>) {
        let font = &self.font;
        self.glyphs
            .entry((c, px))
            .or_insert_with(|| font.rasterize(c, px as f32))
    }

    /// Breaks `text` into lines no wider than `max_width`, keeping the last [`MAX_LINES`].
    fn layout(&mut self, text: &str, px: u32, max_width: f32) -> Vec<Placed> {
        let mut placed = Vec::new();
        let mut line = 0;
        let mut x = 0.0f32;
        for (word_start, word) in split_words(text) {
            let width: f32 = word
                .chars()
                .map(|c| self.glyph(c, px).0.advance_width)
                .sum();
            let space = self.glyph(' ', px).0.advance_width;
            if x > 0.0 && x + space + width > max_width {
                line += 1;
                x = 0.0;
            } else if x > 0.0 {
                x += space;
            }
            for (offset, c) in word.char_indices() {
                let advance = self.glyph(c, px).0.advance_width;
                if x > 0.0 && x + advance > max_width {
                    // A single word wider than the line: break it anywhere.
                    line += 1;
                    x = 0.0;
                }
                placed.push(Placed {
                    c,
                    byte: word_start + offset,
                    line,
                    x,
                });
                x += advance;
            }
        }
        let first_shown = line.saturating_sub(MAX_LINES - 1);
        placed.retain(|p| p.line >= first_shown);
        for p in &mut placed {
            p.line -= first_shown;
        }
        placed
    }

    /// The box a caption of `lines` lines occupies.
    pub fn caption_box(width: u32, height: u32, lines: usize) -> CaptionBox {
        let px = Self::text_px(height);
        let margin = px / 2;
        let line_height = px * 6 / 5;
        let box_height = (line_height * lines.max(1) as u32 + margin).min(height);
        CaptionBox {
            x: margin.min(width / 4),
            y: height.saturating_sub(box_height + margin),
            width: width.saturating_sub(2 * margin.min(width / 4)),
            height: box_height,
        }
    }

    /// Burns a caption (its text and highlights) into the frame.
    pub fn burn(&mut self, frame: &mut VideoFrame, caption: &Caption) {
        self.burn_text(frame, &caption.text, &caption.highlights);
    }

    /// Burns `text` into the bottom of the frame on a darkened box, `highlights` in yellow.
    /// Empty text leaves the frame untouched.
    pub fn burn_text(&mut self, frame: &mut VideoFrame, text: &str, highlights: &[Highlight]) {
        let (width, height) = (frame.width, frame.height);
        if text.trim().is_empty()
            || width < 32
            || height < 32
            || frame.data.len() != VideoFrame::i420_len(width, height)
        {
            return;
        }
        let px = Self::text_px(height);
        let probe = Self::caption_box(width, height, 1);
        let pad = px as f32 / 3.0;
        let placed = self.layout(text, px, probe.width as f32 - 2.0 * pad);
        let lines = placed.iter().map(|p| p.line + 1).max().unwrap_or(1);
        let area = Self::caption_box(width, height, lines);
        let w = width as usize;
        let (luma, chroma) = frame.data.split_at_mut(w * height as usize);
        let (u_plane, v_plane) = chroma.split_at_mut((w / 2) * (height as usize / 2));
        // Darken the box so the text reads on any picture.
        for y in area.y..(area.y + area.height).min(height) {
            let row = &mut luma[y as usize * w..(y as usize + 1) * w];
            for v in &mut row[area.x as usize..(area.x + area.width).min(width) as usize] {
                *v = 16 + ((*v as u16).saturating_sub(16) * 3 / 10) as u8;
            }
        }
        for y in area.y / 2..((area.y + area.height) / 2).min(height / 2) {
            for x in area.x / 2..((area.x + area.width) / 2).min(width / 2) {
                let i = y as usize * (w / 2) + x as usize;
                u_plane[i] = ((u_plane[i] as u16 + 128) / 2) as u8;
                v_plane[i] = ((v_plane[i] as u16 + 128) / 2) as u8;
            }
        }
        let ascent = self
            .font
            .horizontal_line_metrics(px as f32)
            .map_or(px as f32 * 0.8, |m| m.ascent);
        let line_height = (px * 6 / 5) as f32;
        for p in placed {
            let highlighted = highlights
                .iter()
                .any(|h| (h.start..h.end).contains(&p.byte));
            let (metrics, coverage) = self.glyph(p.c, px).clone();
            let baseline = area.y as f32 + pad + ascent + p.line as f32 * line_height;
            let left = area.x as f32 + pad + p.x + metrics.xmin as f32;
            let top = baseline - metrics.height as f32 - metrics.ymin as f32;
            let target_y = if highlighted { HIGHLIGHT_YUV.0 } else { TEXT_Y };
            for gy in 0..metrics.height {
                let y = top as i64 + gy as i64;
                if y < 0 || y >= height as i64 {
                    continue;
                }
                for gx in 0..metrics.width {
                    let x = left as i64 + gx as i64;
                    if x < 0 || x >= width as i64 {
                        continue;
                    }
                    let alpha = coverage[gy * metrics.width + gx] as u32;
                    if alpha == 0 {
                        continue;
                    }
                    let i = y as usize * w + x as usize;
                    luma[i] =
                        ((luma[i] as u32 * (255 - alpha) + target_y as u32 * alpha) / 255) as u8;
                    if alpha > 128 {
                        let ci = (y as usize / 2) * (w / 2) + x as usize / 2;
                        let (u, v) = if highlighted {
                            (HIGHLIGHT_YUV.1, HIGHLIGHT_YUV.2)
                        } else {
                            (128, 128)
                        };
                        u_plane[ci] = u;
                        v_plane[ci] = v;
                    }
                }
            }
        }
    }
}

/// Words and their byte offsets.
fn split_words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split(char::is_whitespace)
        .filter(|w| !w.is_empty())
        .map(move |w| (w.as_ptr() as usize - text.as_ptr() as usize, w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use telecart_core::CaptureTime;

    #[test]
    fn long_text_keeps_the_newest_two_lines() {
        let mut burner = CaptionBurner::new().unwrap();
        let text = "one two three four five six seven eight nine ten eleven twelve thirteen";
        let placed = burner.layout(text, 20, 200.0);
        assert!(placed.iter().all(|p| p.line < MAX_LINES));
        let last: String = placed.iter().rev().take(8).map(|p| p.c).collect();
        assert_eq!(last, "neetriht");
        assert!(
            !placed.iter().any(|p| p.byte == 0),
            "the oldest words scrolled away"
        );
    }

    #[test]
    fn burning_touches_only_the_caption_box_and_survives_odd_input() {
        let mut burner = CaptionBurner::new().unwrap();
        let mut frame = VideoFrame::black(320, 180, 0, CaptureTime(0)).unwrap();
        let before = frame.clone();
        burner.burn_text(&mut frame, "", &[]);
        assert_eq!(frame, before);
        burner.burn_text(&mut frame, "Pain in the chest — 心 ❤ \u{202e}", &[]);
        let area = CaptionBurner::caption_box(320, 180, 1);
        let changed_rows: Vec<usize> = (0..180)
            .filter(|&y| frame.data[y * 320..(y + 1) * 320] != before.data[y * 320..(y + 1) * 320])
            .collect();
        assert!(!changed_rows.is_empty());
        assert!(
            changed_rows.iter().all(|&y| y as u32 >= area.y),
            "{changed_rows:?} {area:?}"
        );
        // A frame too small, or with a wrong buffer, is left alone.
        let mut tiny = VideoFrame::black(16, 16, 0, CaptureTime(0)).unwrap();
        let tiny_before = tiny.clone();
        burner.burn_text(&mut tiny, "text", &[]);
        assert_eq!(tiny, tiny_before);
    }
}
