//! Table-driven tests of SPIFFE ID and trust domain parsing.

use super::*;

#[test]
fn good_ids() {
    // (input, trust domain, path)
    let cases = [
        ("spiffe://example.org", "example.org", ""),
        ("spiffe://example.org/a", "example.org", "/a"),
        (
            "spiffe://cluster.local/ns/default/sa/greeter",
            "cluster.local",
            "/ns/default/sa/greeter",
        ),
        ("spiffe://a-b_c.9/A.b-C_d/0", "a-b_c.9", "/A.b-C_d/0"),
        ("spiffe://td/...", "td", "/..."),
        ("spiffe://td/.a/a.", "td", "/.a/a."),
    ];
    for (input, td, path) in cases {
        let id = SpiffeId::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(id.as_str(), input);
        assert_eq!(id.to_string(), input);
        assert_eq!(id.trust_domain().as_str(), td, "{input}");
        assert_eq!(id.path(), path, "{input}");
    }
}

#[test]
fn limits_are_inclusive() {
    let td = "a".repeat(255);
    let id = SpiffeId::parse(&format!("spiffe://{td}")).unwrap();
    assert_eq!(id.trust_domain().as_str(), td);

    let prefix = format!("spiffe://{td}/");
    let long = format!("{prefix}{}", "b".repeat(2048 - prefix.len()));
    assert_eq!(long.len(), 2048);
    assert!(SpiffeId::parse(&long).is_ok());
    let too_long = format!("{long}b");
    assert!(matches!(
        SpiffeId::parse(&too_long),
        Err(SpiffeIdError::TooLong { len: 2049, .. })
    ));
}

#[test]
fn bad_ids() {
    use SpiffeIdError as E;
    // (input, expected variant, expected message)
    type IsExpected = fn(&SpiffeIdError) -> bool;
    let cases: &[(&str, IsExpected, &str)] = &[
        (
            "",
            |e| matches!(e, E::Empty { .. }),
            r#"invalid SPIFFE ID "": empty"#,
        ),
        (
            "http://example.org/a",
            |e| matches!(e, E::Scheme { .. }),
            r#"invalid SPIFFE ID "http://example.org/a": must start with "spiffe://" (lowercase)"#,
        ),
        (
            "SPIFFE://example.org/a",
            |e| matches!(e, E::Scheme { .. }),
            "",
        ),
        (
            "spiffe:/example.org/a",
            |e| matches!(e, E::Scheme { .. }),
            "",
        ),
        ("example.org/a", |e| matches!(e, E::Scheme { .. }), ""),
        (
            "spiffe://",
            |e| matches!(e, E::EmptyTrustDomain { .. }),
            r#"invalid SPIFFE ID "spiffe://": trust domain is empty"#,
        ),
        (
            "spiffe:///a",
            |e| matches!(e, E::EmptyTrustDomain { .. }),
            "",
        ),
        (
            "spiffe://Foo/x",
            |e| matches!(e, E::TrustDomainUppercase { .. }),
            r#"invalid SPIFFE ID "spiffe://Foo/x": trust domain must be lowercase"#,
        ),
        (
            "spiffe://ex ample/x",
            |e| matches!(e, E::TrustDomainChar { found: ' ', .. }),
            r#"invalid SPIFFE ID "spiffe://ex ample/x": trust domain has the character ' '; only a-z, 0-9, '.', '-' and '_' are allowed"#,
        ),
        (
            "spiffe://ex+ample/x",
            |e| matches!(e, E::TrustDomainChar { found: '+', .. }),
            "",
        ),
        (
            "spiffe://exämple/x",
            |e| matches!(e, E::TrustDomainChar { found: 'ä', .. }),
            "",
        ),
        (
            "spiffe://example.org:8443/a",
            |e| matches!(e, E::Port { .. }),
            r#"invalid SPIFFE ID "spiffe://example.org:8443/a": a port is not allowed"#,
        ),
        (
            "spiffe://user@example.org/a",
            |e| matches!(e, E::Userinfo { .. }),
            "",
        ),
        (
            "spiffe://example.org/a?b=c",
            |e| matches!(e, E::Query { .. }),
            r#"invalid SPIFFE ID "spiffe://example.org/a?b=c": a query is not allowed"#,
        ),
        (
            "spiffe://example.org?x",
            |e| matches!(e, E::Query { .. }),
            "",
        ),
        (
            "spiffe://example.org/a#b",
            |e| matches!(e, E::Fragment { .. }),
            "",
        ),
        (
            "spiffe://example.org/a%20b",
            |e| matches!(e, E::PercentEncoding { .. }),
            "",
        ),
        (
            "spiffe://example.org/",
            |e| matches!(e, E::TrailingSlash { .. }),
            r#"invalid SPIFFE ID "spiffe://example.org/": path must not end with '/'"#,
        ),
        (
            "spiffe://example.org/a/",
            |e| matches!(e, E::TrailingSlash { .. }),
            "",
        ),
        (
            "spiffe://example.org//a",
            |e| matches!(e, E::EmptySegment { .. }),
            r#"invalid SPIFFE ID "spiffe://example.org//a": path segments must not be empty"#,
        ),
        (
            "spiffe://example.org/a//b",
            |e| matches!(e, E::EmptySegment { .. }),
            "",
        ),
        (
            "spiffe://example.org/.",
            |e| matches!(e, E::DotSegment { .. }),
            "",
        ),
        (
            "spiffe://example.org/a/../b",
            |e| matches!(e, E::DotSegment { .. }),
            "",
        ),
        (
            "spiffe://example.org/a b",
            |e| matches!(e, E::PathChar { found: ' ', .. }),
            r#"invalid SPIFFE ID "spiffe://example.org/a b": path has the character ' '; only letters, digits, '.', '-' and '_' are allowed"#,
        ),
        (
            "spiffe://example.org/a:b",
            |e| matches!(e, E::PathChar { found: ':', .. }),
            "",
        ),
        (
            "spiffe://example.org/a@b",
            |e| matches!(e, E::PathChar { found: '@', .. }),
            "",
        ),
        (
            "spiffe://example.org/é",
            |e| matches!(e, E::PathChar { found: 'é', .. }),
            "",
        ),
    ];
    for (input, is_expected, message) in cases {
        let err = SpiffeId::parse(input).expect_err(input);
        assert!(is_expected(&err), "{input}: unexpected {err:?}");
        assert_eq!(err.input(), &Input::SpiffeId((*input).to_owned()));
        if !message.is_empty() {
            assert_eq!(err.to_string(), *message);
        }
    }
    let long_td = format!("spiffe://{}/a", "a".repeat(256));
    assert!(matches!(
        SpiffeId::parse(&long_td),
        Err(SpiffeIdError::TrustDomainTooLong { len: 256, .. })
    ));
}

#[test]
fn trust_domains() {
    for good in ["example.org", "cluster.local", "a", "a_b-c.0"] {
        assert_eq!(TrustDomain::new(good).unwrap().as_str(), good);
    }
    let cases: &[(&str, &str)] = &[
        ("", r#"invalid trust domain "": trust domain is empty"#),
        (
            "Example.org",
            r#"invalid trust domain "Example.org": trust domain must be lowercase"#,
        ),
        (
            "example.org:80",
            r#"invalid trust domain "example.org:80": a port is not allowed"#,
        ),
        (
            "spiffe://example.org",
            r#"invalid trust domain "spiffe://example.org": give the bare name, without "spiffe://""#,
        ),
        (
            "example.org/a",
            r#"invalid trust domain "example.org/a": trust domain has the character '/'; only a-z, 0-9, '.', '-' and '_' are allowed"#,
        ),
    ];
    for (input, message) in cases {
        let err = TrustDomain::new(input).expect_err(input);
        assert_eq!(err.to_string(), *message);
        assert_eq!(err.input(), &Input::TrustDomain((*input).to_owned()));
    }
    assert!(matches!(
        TrustDomain::new(&"a".repeat(256)),
        Err(SpiffeIdError::TrustDomainTooLong { len: 256, .. })
    ));
}

#[test]
fn service_account_ids() {
    let td = TrustDomain::new("cluster.local").unwrap();
    let id = SpiffeId::from_service_account(&td, "default", "greeter").unwrap();
    assert_eq!(id.as_str(), "spiffe://cluster.local/ns/default/sa/greeter");
    assert_eq!(id.namespace(), Some("default"));
    assert_eq!(id.service_account(), Some("greeter"));
    assert_eq!(id.trust_domain(), &td);

    let err = SpiffeId::from_service_account(&td, "Default", "greeter").unwrap_err();
    assert!(matches!(err, SpiffeIdError::Namespace { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        r#"invalid SPIFFE ID "spiffe://cluster.local/ns/Default/sa/greeter": namespace "Default" is not a DNS label: only lowercase letters, digits and '-' are allowed"#
    );
    let err = SpiffeId::from_service_account(&td, "default", "").unwrap_err();
    assert!(
        matches!(err, SpiffeIdError::ServiceAccount { .. }),
        "{err:?}"
    );
    let err = SpiffeId::from_service_account(&td, "default", "a/b").unwrap_err();
    assert!(
        matches!(err, SpiffeIdError::ServiceAccount { .. }),
        "{err:?}"
    );
}

#[test]
fn namespace_and_service_account_need_the_exact_shape() {
    // (input, namespace and service account)
    let cases = [
        ("spiffe://td/ns/a/sa/b", Some(("a", "b"))),
        ("spiffe://td/ns/a/sa/b/c", None),
        ("spiffe://td/ns/a/sa", None),
        ("spiffe://td/ns/a/xa/b", None),
        ("spiffe://td/ns/a", None),
        ("spiffe://td/x/ns/a/sa/b", None),
        ("spiffe://td/NS/a/sa/b", None),
        ("spiffe://td", None),
    ];
    for (input, expected) in cases {
        let id = SpiffeId::parse(input).unwrap();
        assert_eq!(id.namespace(), expected.map(|(ns, _)| ns), "{input}");
        assert_eq!(id.service_account(), expected.map(|(_, sa)| sa), "{input}");
    }
}

#[test]
fn serde_as_string_and_validating() {
    let id = SpiffeId::parse("spiffe://td/ns/a/sa/b").unwrap();
    let yaml = serde_yaml::to_string(&id).unwrap();
    assert_eq!(yaml.trim(), "spiffe://td/ns/a/sa/b");
    assert_eq!(serde_yaml::from_str::<SpiffeId>(&yaml).unwrap(), id);
    let err = serde_yaml::from_str::<SpiffeId>("spiffe://TD/a").unwrap_err();
    assert!(
        err.to_string().contains("trust domain must be lowercase"),
        "{err}"
    );

    let td = TrustDomain::new("cluster.local").unwrap();
    let yaml = serde_yaml::to_string(&td).unwrap();
    assert_eq!(serde_yaml::from_str::<TrustDomain>(&yaml).unwrap(), td);
    assert!(serde_yaml::from_str::<TrustDomain>("a b").is_err());
}
