//! Countries: free text (as FarmFlow holds it) to ISO 3166-1 alpha-2, and back out in the
//! spelling a side wants.
//!
//! Pure, and depends on no other farmsync module; `customer` and `policy` build on it.
//!
//! The `celes` crate knows codes and official names; its lookups want names squeezed to
//! lower-case letters ("unitedstatesofamerica"), and it misses a few spellings people type
//! ("UK", "U.S.A.", "Great Britain" with a space, accented names). Text that maps to no country
//! is never guessed at: [`CountryCode::parse`] answers `None` and the caller reports it.

use std::fmt;
use std::str::FromStr;

use celes::Country;
use serde::{Deserialize, Serialize};

/// How farmsync writes FarmFlow's free-text `country`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CountryFormat {
    /// `US`
    Alpha2,
    /// `USA`
    #[default]
    Alpha3,
    /// `United States`
    Name,
}

/// An ISO 3166-1 country, known by its alpha-2 code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode(&'static str);

/// Spellings `celes` does not know, after [`squeeze`]: key → alpha-2.
const EXTRA_SPELLINGS: &[(&str, &str)] = &[
    ("uk", "GB"),
    ("britain", "GB"),
    ("wales", "GB"),
    ("usa", "US"),
    ("unitedstatesofamerica", "US"),
    ("unitedstates", "US"),
    ("usofa", "US"),
    ("uae", "AE"),
    ("aotearoa", "NZ"),
    ("deutschland", "DE"),
    ("southkorea", "KR"),
    ("northkorea", "KP"),
    ("vatican", "VA"),
    ("vaticancity", "VA"),
    ("hongkongsar", "HK"),
    ("macaosar", "MO"),
    ("republicofthecongo", "CG"),
    ("congobrazzaville", "CG"),
    ("drc", "CD"),
    ("drcongo", "CD"),
    ("congokinshasa", "CD"),
];

/// Display names for countries whose `celes` official name reads oddly in an address
/// ("The United States Of America", "Coted Ivoire"). Every other country uses its official name.
const DISPLAY_NAMES: &[(&str, &str)] = &[
    ("US", "United States"),
    ("GB", "United Kingdom"),
    ("CI", "Côte d'Ivoire"),
    ("TW", "Taiwan"),
    ("KR", "South Korea"),
    ("KP", "North Korea"),
    ("RU", "Russia"),
    ("IR", "Iran"),
    ("VE", "Venezuela"),
    ("SY", "Syria"),
    ("LA", "Laos"),
    ("MD", "Moldova"),
    ("TZ", "Tanzania"),
    ("MK", "North Macedonia"),
    ("PS", "Palestine"),
    ("BN", "Brunei"),
    ("FM", "Micronesia"),
    ("SX", "Sint Maarten"),
    ("MF", "Saint Martin"),
    ("SH", "Saint Helena"),
    ("CC", "Cocos (Keeling) Islands"),
    ("FK", "Falkland Islands"),
    ("TL", "Timor-Leste"),
    ("GW", "Guinea-Bissau"),
    ("VA", "Vatican City"),
    ("VI", "U.S. Virgin Islands"),
    ("AX", "Åland Islands"),
    ("CW", "Curaçao"),
    ("RE", "Réunion"),
    ("BL", "Saint Barthélemy"),
    ("CD", "Democratic Republic of the Congo"),
    ("CG", "Republic of the Congo"),
    ("HM", "Heard Island and McDonald Islands"),
    ("BS", "Bahamas"),
    ("GM", "Gambia"),
];

impl CountryCode {
    /// Reads a country from free text: a code (alpha-2 or alpha-3), a name, or a common alias,
    /// in any case, with or without spaces, dots, accents or a leading "the".
    /// `None` for empty text and for text that names no country.
    pub fn parse(text: &str) -> Option<Self> {
        let key = squeeze(text);
        // Numbers are never read as ISO numeric codes: in a free-text field they are a typo
        // (a postcode in the wrong box), not a country.
        if key.is_empty() || key.bytes().any(|b| b.is_ascii_digit()) {
            return None;
        }
        if let Some((_, alpha2)) = EXTRA_SPELLINGS.iter().find(|(k, _)| *k == key) {
            return Self::from_alpha2(alpha2);
        }
        // `from_str` covers codes and official names but not every alias ("turkiye").
        let lookup = |k: &str| {
            Country::from_str(k)
                .or_else(|_| Country::from_alias(k))
                .or_else(|_| Country::from_name(k))
                .ok()
                .map(|c| CountryCode(c.alpha2))
        };
        lookup(&key)
            .or_else(|| key.strip_prefix("the").and_then(lookup))
            .or_else(|| lookup(&format!("the{key}")))
    }

    /// The country with this alpha-2 code (any case, surrounding spaces ignored).
    pub fn from_alpha2(code: &str) -> Option<Self> {
        let code = code.trim();
        if code.len() != 2 {
            return None;
        }
        Country::from_alpha2(code)
            .ok()
            .map(|c| CountryCode(c.alpha2))
    }

    /// `AU`
    pub fn alpha2(self) -> &'static str {
        self.0
    }

    /// `AUS`
    pub fn alpha3(self) -> &'static str {
        self.country().alpha3
    }

    /// A readable English name (`Australia`, `United States`), which [`CountryCode::parse`]
    /// reads back to the same country.
    pub fn name(self) -> String {
        if let Some((_, name)) = DISPLAY_NAMES.iter().find(|(code, _)| *code == self.0) {
            return (*name).to_owned();
        }
        let official = self.country().long_name;
        let official = official.strip_prefix("The ").unwrap_or(official);
        // celes capitalises every word ("Bosnia And Herzegovina"); addresses do not.
        official
            .split(' ')
            .enumerate()
            .map(|(i, word)| match word {
                "And" | "Of" | "The" | "Da" if i > 0 => word.to_lowercase(),
                _ => word.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The spelling farmsync writes into FarmFlow's free-text `country`.
    pub fn format(self, format: CountryFormat) -> String {
        match format {
            CountryFormat::Alpha2 => self.alpha2().to_owned(),
            CountryFormat::Alpha3 => self.alpha3().to_owned(),
            CountryFormat::Name => self.name(),
        }
    }

    fn country(self) -> Country {
        // Constructed only from a `celes` country, so the lookup cannot fail; the fallback
        // keeps this total without a panic path.
        Country::from_alpha2(self.0).unwrap_or_else(|_| Country::australia())
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Every country `celes` knows, for exhaustive tests and tables.
pub fn all() -> impl Iterator<Item = CountryCode> {
    Country::get_countries()
        .into_iter()
        .map(|c| CountryCode(c.alpha2))
}

/// Folds free text into a lookup key: lower-case ASCII letters and digits only, accents
/// removed, `&` read as "and".
fn squeeze(text: &str) -> String {
    let mut key = String::with_capacity(text.len());
    for c in text.trim().chars().flat_map(char::to_lowercase) {
        match c {
            'a'..='z' | '0'..='9' => key.push(c),
            '&' => key.push_str("and"),
            'ß' => key.push_str("ss"),
            'æ' => key.push_str("ae"),
            'œ' => key.push_str("oe"),
            _ => {
                if let Some(base) = unaccent(c) {
                    key.push(base);
                }
                // Everything else (spaces, dots, apostrophes, hyphens, brackets) is dropped.
            }
        }
    }
    key
}

/// The unaccented letter of a lower-case Latin letter with a diacritic.
fn unaccent(c: char) -> Option<char> {
    let base = match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => 'a',
        'ç' | 'ć' | 'č' | 'ĉ' | 'ċ' => 'c',
        'ď' | 'đ' => 'd',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => 'e',
        'ğ' | 'ĝ' | 'ġ' | 'ģ' => 'g',
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'ı' => 'i',
        'ķ' => 'k',
        'ł' | 'ľ' | 'ļ' | 'ĺ' => 'l',
        'ñ' | 'ń' | 'ň' | 'ņ' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => 'o',
        'ŕ' | 'ř' => 'r',
        'ś' | 'š' | 'ş' | 'ș' => 's',
        'ť' | 'ţ' | 'ț' => 't',
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'ų' => 'u',
        'ý' | 'ÿ' => 'y',
        'ź' | 'ż' | 'ž' => 'z',
        _ => return None,
    };
    Some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_common_spellings() {
        let table = [
            ("US", "US"),
            ("us", "US"),
            ("USA", "US"),
            ("U.S.", "US"),
            ("U.S.A.", "US"),
            ("usa ", "US"),
            ("United States", "US"),
            ("united states of america", "US"),
            ("The United States of America", "US"),
            ("America", "US"),
            ("UK", "GB"),
            ("U.K.", "GB"),
            ("GB", "GB"),
            ("GBR", "GB"),
            ("Great Britain", "GB"),
            ("United Kingdom", "GB"),
            ("England", "GB"),
            ("Scotland", "GB"),
            ("Wales", "GB"),
            ("Australia", "AU"),
            (" australia ", "AU"),
            ("AUSTRALIA", "AU"),
            ("AU", "AU"),
            ("AUS", "AU"),
            ("New Zealand", "NZ"),
            ("NZ", "NZ"),
            ("Türkiye", "TR"),
            ("Turkiye", "TR"),
            ("Turkey", "TR"),
            ("Côte d'Ivoire", "CI"),
            ("Cote d'Ivoire", "CI"),
            ("Ivory Coast", "CI"),
            ("Curaçao", "CW"),
            ("Réunion", "RE"),
            ("Åland Islands", "AX"),
            ("The Netherlands", "NL"),
            ("Netherlands", "NL"),
            ("Holland", "NL"),
            ("Gambia", "GM"),
            ("the gambia", "GM"),
            ("Bosnia & Herzegovina", "BA"),
            ("Russia", "RU"),
            ("South Korea", "KR"),
            ("Czech Republic", "CZ"),
            ("Guinea-Bissau", "GW"),
            ("Timor-Leste", "TL"),
            ("UAE", "AE"),
            ("Deutschland", "DE"),
            ("Germany", "DE"),
            ("DEU", "DE"),
        ];
        for (text, want) in table {
            assert_eq!(
                CountryCode::parse(text).map(CountryCode::alpha2),
                Some(want),
                "{text:?}"
            );
        }
    }

    #[test]
    fn never_guesses() {
        for text in [
            "", "   ", "Tasmania", "Victoria", "NSW", "Korea", "840", "2112", "Atlantis", "U",
            "the", "??",
        ] {
            assert_eq!(CountryCode::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn writes_each_format() {
        let us = CountryCode::parse("USA").unwrap();
        assert_eq!(us.format(CountryFormat::Alpha2), "US");
        assert_eq!(us.format(CountryFormat::Alpha3), "USA");
        assert_eq!(us.format(CountryFormat::Name), "United States");
        let au = CountryCode::from_alpha2("au").unwrap();
        assert_eq!(au.format(CountryFormat::Alpha3), "AUS");
        assert_eq!(au.format(CountryFormat::Name), "Australia");
        let ba = CountryCode::from_alpha2("BA").unwrap();
        assert_eq!(ba.name(), "Bosnia and Herzegovina");
    }

    #[test]
    fn every_written_spelling_reads_back_to_its_country() {
        let mut seen = 0;
        for code in all() {
            seen += 1;
            for format in [
                CountryFormat::Alpha2,
                CountryFormat::Alpha3,
                CountryFormat::Name,
            ] {
                let written = code.format(format);
                assert_eq!(
                    CountryCode::parse(&written),
                    Some(code),
                    "{code} written as {written:?}"
                );
            }
            assert_eq!(CountryCode::from_alpha2(code.alpha2()), Some(code));
        }
        assert!(seen >= 249, "only {seen} countries");
    }

    #[test]
    fn alpha2_lookup_is_strict() {
        assert_eq!(CountryCode::from_alpha2("USA"), None);
        assert_eq!(CountryCode::from_alpha2("XX"), None);
        assert_eq!(CountryCode::from_alpha2(""), None);
        assert_eq!(
            CountryCode::from_alpha2(" nz ").map(CountryCode::alpha2),
            Some("NZ")
        );
    }
}
