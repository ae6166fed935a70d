//! Medical terms in caption text: a bundled vocabulary matched tolerantly (case, plurals,
//! small misspellings), giving byte spans to highlight.

use telecart_webrtc::datachannel::Highlight;

use crate::TranscribeError;

/// The bundled vocabulary (`data/medical_vocabulary.tsv`).
pub const BUNDLED_VOCABULARY: &str = include_str!("../data/medical_vocabulary.tsv");

/// Categories a vocabulary line may name.
pub const CATEGORIES: &[&str] = &["drug", "symptom", "condition", "anatomy", "vital", "unit"];

/// One way of saying a term.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Form {
    /// Lower-case words.
    words: Vec<String>,
    /// Index of the entry it names.
    entry: usize,
}

/// A vocabulary entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The canonical term.
    pub term: String,
    /// One of [`CATEGORIES`].
    pub category: String,
}

/// The vocabulary and its matcher.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    entries: Vec<Entry>,
    /// Longest forms first, so that "chest pain" wins over "chest".
    forms: Vec<Form>,
}

/// A word of the text with its byte span.
#[derive(Debug, Clone, Copy)]
struct Word<'a> {
    text: &'a str,
    start: usize,
    end: usize,
}

fn words(text: &str) -> Vec<Word<'_>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        let in_word = c.is_alphanumeric() || (c == '\'' && start.is_some());
        match (in_word, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push(Word {
                    text: text[s..i].trim_end_matches('\''),
                    start: s,
                    end: s + text[s..i].trim_end_matches('\'').len(),
                });
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        let word = text[s..].trim_end_matches('\'');
        out.push(Word {
            text: word,
            start: s,
            end: s + word.len(),
        });
    }
    out
}

/// Whether a spoken word is the vocabulary word, allowing case, plurals, possessives and a
/// small misspelling. Short words must match exactly (edit distance on "heart"/"heard" would
/// highlight the wrong word), longer ones may be one edit off (two from nine letters on), and
/// the first letter must agree: recognisers rarely get it wrong, and it keeps unrelated words
/// of similar length apart.
fn word_matches(spoken: &str, term: &str) -> bool {
    let spoken = spoken.to_lowercase();
    let spoken = spoken.trim_end_matches("'s").trim_end_matches('\'');
    if spoken == term {
        return true;
    }
    let singular = [
        spoken.strip_suffix("ies").map(|s| format!("{s}y")),
        spoken.strip_suffix("es").map(str::to_string),
        spoken.strip_suffix('s').map(str::to_string),
    ];
    if singular.iter().flatten().any(|s| s == term) {
        return true;
    }
    let len = term.chars().count();
    let allowed = match len {
        0..=5 => 0,
        6..=8 => 1,
        _ => 2,
    };
    if allowed == 0 || spoken.chars().next() != term.chars().next() {
        return false;
    }
    std::iter::once(spoken.to_string())
        .chain(singular.into_iter().flatten())
        .filter(|candidate| candidate.chars().count().abs_diff(len) <= allowed)
        .any(|candidate| strsim::damerau_levenshtein(&candidate, term) <= allowed)
}

impl Vocabulary {
    /// The bundled vocabulary.
    pub fn bundled() -> Self {
        // The bundled file is checked by a unit test; an error here is a build defect.
        Self::parse(BUNDLED_VOCABULARY).unwrap_or_else(|e| {
            tracing::error!(error = %e, "bundled medical vocabulary is broken; no highlighting");
            Self {
                entries: Vec::new(),
                forms: Vec::new(),
            }
        })
    }

    /// Parses `category<TAB>term[<TAB>alias|alias]` lines (`#` comments, blank lines allowed).
    pub fn parse(text: &str) -> Result<Self, TranscribeError> {
        let mut entries = Vec::new();
        let mut forms = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let bad =
                |why: &str| TranscribeError::Config(format!("vocabulary line {}: {why}", n + 1));
            if !(2..=3).contains(&fields.len()) {
                return Err(bad("expected category<TAB>term[<TAB>aliases]"));
            }
            let category = fields[0].trim();
            if !CATEGORIES.contains(&category) {
                return Err(bad(&format!("unknown category {category:?}")));
            }
            let term = fields[1].trim().to_lowercase();
            let entry = entries.len();
            let mut sayings = vec![term.clone()];
            if let Some(aliases) = fields.get(2) {
                sayings.extend(aliases.split('|').map(|a| a.trim().to_lowercase()));
            }
            for saying in sayings {
                let words: Vec<String> =
                    words(&saying).iter().map(|w| w.text.to_string()).collect();
                if words.is_empty() {
                    return Err(bad("empty term"));
                }
                forms.push(Form { words, entry });
            }
            entries.push(Entry {
                term,
                category: category.to_string(),
            });
        }
        forms.sort_by_key(|f| std::cmp::Reverse(f.words.len()));
        Ok(Self { entries, forms })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The terms of one category.
    pub fn terms(&self, category: &str) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(move |e| e.category == category)
            .map(|e| e.term.as_str())
    }

    /// The medical terms in `text`, as non-overlapping byte spans in order.
    pub fn highlight(&self, text: &str) -> Vec<Highlight> {
        let words = words(text);
        let mut out = Vec::new();
        let mut i = 0;
        while i < words.len() {
            let found = self.forms.iter().find(|form| {
                let n = form.words.len();
                i + n <= words.len()
                    && form
                        .words
                        .iter()
                        .zip(&words[i..i + n])
                        .all(|(term, spoken)| word_matches(spoken.text, term))
            });
            match found {
                Some(form) => {
                    let n = form.words.len();
                    let entry = &self.entries[form.entry];
                    out.push(Highlight {
                        start: words[i].start,
                        end: words[i + n - 1].end,
                        term: entry.term.clone(),
                        category: entry.category.clone(),
                    });
                    i += n;
                }
                None => i += 1,
            }
        }
        out
    }

    /// A decoder prompt that biases Whisper towards clinical wording and this vocabulary's
    /// spelling. Whisper reads the prompt as preceding text, so a plausible sentence works
    /// better than a bare list; it is kept short (the prompt shares the 224-token context).
    pub fn prompt(&self) -> String {
        let pick =
            |category: &str, n: usize| -> Vec<&str> { self.terms(category).take(n).collect() };
        format!(
            "Clinical telehealth consultation. The patient reports {}. Vital signs: {}. Medications: {}.",
            pick("symptom", 6).join(", "),
            pick("vital", 5).join(", "),
            pick("drug", 12).join(", "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(text: &str) -> Vec<(String, String, String)> {
        Vocabulary::bundled()
            .highlight(text)
            .into_iter()
            .map(|h| (text[h.start..h.end].to_string(), h.term, h.category))
            .collect()
    }

    fn t(a: &str, b: &str, c: &str) -> (String, String, String) {
        (a.into(), b.into(), c.into())
    }

    #[test]
    fn the_bundled_file_parses() {
        let v = Vocabulary::parse(BUNDLED_VOCABULARY).unwrap();
        assert!(v.len() > 200, "{}", v.len());
        for category in CATEGORIES {
            assert!(v.terms(category).count() > 5, "{category}");
        }
    }

    #[test]
    fn case_plurals_and_longest_match() {
        assert_eq!(
            spans("The patient has Chest Pain and two broken Ribs."),
            vec![
                t("Chest Pain", "chest pain", "symptom"),
                t("Ribs", "rib", "anatomy")
            ]
        );
        assert_eq!(
            spans("Blood pressure is 150 over 90, 500 milligrams of Metformin."),
            vec![
                t("Blood pressure", "blood pressure", "vital"),
                t("milligrams", "milligrams", "unit"),
                t("Metformin", "metformin", "drug")
            ]
        );
        assert_eq!(
            spans("allergies: penicillin; the patient's kidneys"),
            vec![
                t("allergies", "allergy", "condition"),
                t("penicillin", "penicillin", "drug"),
                t("kidneys", "kidney", "anatomy")
            ]
        );
    }

    #[test]
    fn small_misspellings_and_aliases() {
        assert_eq!(
            spans("start lisinipril and atorvastatine, give Tylenol"),
            vec![
                t("lisinipril", "lisinopril", "drug"),
                t("atorvastatine", "atorvastatin", "drug"),
                t("Tylenol", "acetaminophen", "drug")
            ]
        );
        assert_eq!(
            spans("shortness of breathe since morning"),
            vec![t("shortness of breathe", "shortness of breath", "symptom")]
        );
    }

    #[test]
    fn near_misses_on_short_words_are_not_terms() {
        assert!(spans("I heard you, the chess game, a quick test").is_empty());
        assert!(spans("").is_empty());
        assert!(spans("   ,,, ''' 123").is_empty());
    }

    #[test]
    fn spans_are_byte_offsets_on_char_boundaries() {
        let text = "Fièvre — fever à 39 degrees, naïve insulin";
        for h in Vocabulary::bundled().highlight(text) {
            assert!(text.is_char_boundary(h.start) && text.is_char_boundary(h.end));
        }
        assert_eq!(
            spans(text),
            vec![
                t("fever", "fever", "symptom"),
                t("degrees", "degrees", "unit"),
                t("insulin", "insulin", "drug")
            ]
        );
    }

    #[test]
    fn bad_vocabulary_lines_are_refused() {
        assert!(Vocabulary::parse("drug\n").is_err());
        assert!(Vocabulary::parse("food\tapple\n").is_err());
        assert!(Vocabulary::parse("drug\t ,, \n").is_err());
        assert!(
            Vocabulary::parse("# only a comment\n\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn prompt_names_the_vocabulary() {
        let p = Vocabulary::bundled().prompt();
        assert!(
            p.contains("chest pain") && p.contains("blood pressure"),
            "{p}"
        );
        assert!(p.len() < 600);
    }
}
