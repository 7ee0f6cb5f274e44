//! Kubernetes DNS-1123 names: the shape of namespaces, service accounts, services and object
//! names, checked wherever the model takes one (SPIFFE IDs, service names, routes, policies).

/// Checks a Kubernetes DNS-1123 label: 1 to 63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn check_dns_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("empty name");
    }
    if label.len() > 63 {
        return Err("longer than 63 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("only lowercase letters, digits and '-' are allowed");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// Checks a Kubernetes DNS-1123 subdomain (the shape of object names such as a route's): 1 to
/// 253 characters, dot-separated labels of `[a-z0-9-]`, each starting and ending alphanumeric.
pub fn check_dns_subdomain(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label between dots");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("only lowercase letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("each label must start and end with a letter or digit");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        assert!(check_dns_label("greeter-2").is_ok());
        for bad in ["", "-a", "a-", "A", "a.b", &"a".repeat(64)] {
            assert!(check_dns_label(bad).is_err(), "{bad:?}");
        }
        assert!(check_dns_subdomain("a.b-c.d").is_ok());
        for bad in ["", "a..b", "-a.b", "a_b", &"a".repeat(254)] {
            assert!(check_dns_subdomain(bad).is_err(), "{bad:?}");
        }
    }
}
