//! An endpoint's address as the wire carries it (`"10.0.0.1:8080"`), written without the
//! formatting machinery: a snapshot projected for a service of 1,000 endpoints wrote 1,000 of
//! them through `Display`, about 3,700 instructions each under callgrind (the formatter and the
//! string's regrowth), once per config version.

use std::net::SocketAddr;

/// `addr` exactly as its `Display` writes it: an IPv4 address by hand, an IPv6 one (rarer,
/// with its zero-compression rules) through `Display`.
pub(super) fn to_wire(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => {
            // "255.255.255.255:65535" is the longest.
            let mut out = String::with_capacity(21);
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_decimal(&mut out, u32::from(octet));
            }
            out.push(':');
            push_decimal(&mut out, u32::from(v4.port()));
            out
        }
        SocketAddr::V6(_) => addr.to_string(),
    }
}

/// Appends `n` in decimal, without leading zeros.
fn push_decimal(out: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    loop {
        start -= 1;
        // `n % 10` is a single digit.
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        out.push(char::from(digit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_display_writes_it() {
        let addrs = [
            "0.0.0.0:0",
            "10.0.0.1:8080",
            "127.0.0.1:9",
            "255.255.255.255:65535",
            "192.168.100.10:443",
            "1.20.100.7:10000",
            "[::1]:8080",
            "[2001:db8::1]:443",
            "[fe80::1:2:3:4]:0",
        ];
        for addr in addrs {
            let addr: SocketAddr = addr.parse().expect("an address");
            assert_eq!(to_wire(&addr), addr.to_string());
        }
        // Every octet and a spread of ports.
        for octet in 0..=255u8 {
            for port in [0u16, 1, 9, 10, 99, 100, 999, 1000, 9999, 10000, 65535] {
                let addr = SocketAddr::from(([octet, 0, 10, octet], port));
                assert_eq!(to_wire(&addr), addr.to_string());
            }
        }
    }
}
