//! Finding one header among a request's or response's few headers, for less than a lookup.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Up to this many headers are scanned; a map with more is looked up by hash.
///
/// A gRPC call carries about five headers, its response two or three and its trailers two:
/// comparing that many names (a standard name is compared as a small number, another by its
/// length first) costs a fraction of hashing one name for a lookup, which was about 150 to
/// 180 instructions under callgrind. Past this bound the scan would cost more than the hash,
/// and a peer that sends many headers cannot make a call slower than a lookup would.
pub const SCANNED: usize = 8;

/// The first value of header `name`, as [`HeaderMap::get`] returns it: scanned when `headers`
/// holds at most [`SCANNED`] values, looked up otherwise.
pub fn first<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    if headers.len() <= SCANNED {
        headers
            .iter()
            .find_map(|(candidate, value)| (candidate == name).then_some(value))
    } else {
        headers.get(name)
    }
}

/// The first values of headers `a` and `b`, found in one scan (as [`first`] finds one).
pub fn first_two<'h>(
    headers: &'h HeaderMap,
    a: &HeaderName,
    b: &HeaderName,
) -> (Option<&'h HeaderValue>, Option<&'h HeaderValue>) {
    if headers.len() > SCANNED {
        return (headers.get(a), headers.get(b));
    }
    let (mut found_a, mut found_b) = (None, None);
    for (name, value) in headers {
        if found_a.is_none() && name == a {
            found_a = Some(value);
        }
        if found_b.is_none() && name == b {
            found_b = Some(value);
        }
    }
    (found_a, found_b)
}

#[cfg(test)]
mod tests {
    use http::header::{CONTENT_TYPE, TE};

    use super::*;

    fn map(entries: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in entries {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn a_scan_finds_what_a_lookup_finds() {
        let status = HeaderName::from_static("grpc-status");
        let cases = [
            map(&[]),
            map(&[("content-type", "application/grpc"), ("te", "trailers")]),
            map(&[("grpc-status", "0"), ("grpc-message", "")]),
            // Two values: the first counts, as with `get`.
            map(&[("grpc-status", "14"), ("grpc-status", "0")]),
            // A name that differs only in length or in one byte.
            map(&[
                ("grpc-statuses", "1"),
                ("grpc-statu", "2"),
                ("grpc-stat_s", "3"),
            ]),
        ];
        for headers in &cases {
            for name in [&status, &CONTENT_TYPE, &TE] {
                assert_eq!(
                    first(headers, name),
                    headers.get(name),
                    "{name} in {headers:?}"
                );
                assert_eq!(
                    first_two(headers, name, &status),
                    (headers.get(name), headers.get(&status)),
                    "{name} and {status} in {headers:?}"
                );
            }
        }
    }

    #[test]
    fn past_the_bound_the_map_is_looked_up() {
        let mut entries: Vec<(String, String)> = (0..SCANNED + 4)
            .map(|i| (format!("x-filler-{i}"), i.to_string()))
            .collect();
        entries.push(("grpc-status".into(), "7".into()));
        let entries: Vec<(&str, &str)> = entries
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let headers = map(&entries);
        assert!(headers.len() > SCANNED);
        assert_eq!(
            first(&headers, &HeaderName::from_static("grpc-status")).unwrap(),
            "7"
        );
    }
}
