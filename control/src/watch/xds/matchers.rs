//! String matchers and RE2 patterns, as every xDS resource here writes them.

use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};

/// A string matcher for exactly `value`.
pub(crate) fn exact(value: &str) -> StringMatcher {
    matcher(string_matcher::MatchPattern::Exact(value.to_owned()))
}

/// A string matcher for values that start with `value`.
pub(crate) fn prefix(value: &str) -> StringMatcher {
    matcher(string_matcher::MatchPattern::Prefix(value.to_owned()))
}

/// A string matcher for values the whole of which `pattern` (RE2) matches.
pub(crate) fn regex_matcher(pattern: &str) -> StringMatcher {
    matcher(string_matcher::MatchPattern::SafeRegex(regex(pattern)))
}

/// An RE2 pattern (xDS regexes match the whole value).
pub(crate) fn regex(pattern: &str) -> RegexMatcher {
    RegexMatcher {
        regex: pattern.to_owned(),
        ..Default::default()
    }
}

/// `text` as an RE2 pattern that matches exactly it.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn matcher(pattern: string_matcher::MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_text_literal() {
        assert_eq!(escape("/a.b/c+d"), "/a\\.b/c\\+d");
        assert_eq!(escape("plain-name"), "plain-name");
    }
}
