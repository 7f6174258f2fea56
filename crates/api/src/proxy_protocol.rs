//! The PROXY protocol (versions 1 and 2), as HAProxy's `send-proxy` writes it: how a load
//! balancer tells the server who its client is.
//!
//! Policy: the header is read only from a peer in `trusted_proxies`, and from such a peer it is
//! required (a connection without it is closed). From any other peer nothing is parsed: a
//! client cannot name itself. The address of the client is then the one the balancer names,
//! for local mode, the per-peer connection cap and the logs. A `LOCAL` header (v2) or
//! `UNKNOWN` (v1), the balancer's own health checks, keeps the balancer's address.
//!
//! The functions here only parse; the server reads exactly the bytes they ask for, so no
//! request byte is consumed with the header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes that open a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
];

/// A version 1 line is at most 107 bytes, CRLF included.
pub const V1_MAX_LINE: usize = 107;

/// The largest version 2 address block accepted (the addresses, plus TLVs we skip).
pub const V2_MAX_BODY: usize = 1024;

/// The fixed part of a version 2 header: signature, version and command, family, length.
pub const V2_FIXED: usize = 16;

/// Parses a version 1 line (`PROXY TCP4 1.2.3.4 5.6.7.8 1234 80\r\n`), CRLF included.
/// `Ok(None)` is `UNKNOWN`: keep the connection's own address.
pub fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, String> {
    if line.len() > V1_MAX_LINE {
        return Err("PROXY v1 line is longer than 107 bytes".into());
    }
    let text = std::str::from_utf8(line).map_err(|_| "PROXY v1 line is not ASCII".to_string())?;
    let text = text
        .strip_suffix("\r\n")
        .ok_or("PROXY v1 line does not end in CRLF")?;
    let mut words = text.split(' ');
    if words.next() != Some("PROXY") {
        return Err("not a PROXY v1 line".into());
    }
    let family = words.next().ok_or("PROXY v1 line names no protocol")?;
    if family == "UNKNOWN" {
        return Ok(None);
    }
    let fields: Vec<&str> = words.collect();
    let [source, _destination, source_port, _destination_port] = fields.as_slice() else {
        return Err("PROXY v1 line does not have four address fields".into());
    };
    let ip: IpAddr = match family {
        "TCP4" => source
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| format!("PROXY v1 source {source:?} is not an IPv4 address"))?,
        "TCP6" => source
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| format!("PROXY v1 source {source:?} is not an IPv6 address"))?,
        other => return Err(format!("PROXY v1 protocol {other:?} is not TCP4 or TCP6")),
    };
    let port = source_port
        .parse::<u16>()
        .map_err(|_| format!("PROXY v1 source port {source_port:?} is not a port"))?;
    Ok(Some(SocketAddr::new(ip, port)))
}

/// The length of the address block that follows a version 2 fixed part, or why the fixed
/// part is refused.
pub fn v2_body_len(fixed: &[u8; V2_FIXED]) -> Result<usize, String> {
    if fixed[..12] != V2_SIGNATURE {
        return Err("not a PROXY v2 header".into());
    }
    if fixed[12] >> 4 != 2 {
        return Err(format!("PROXY v2 version {} is not 2", fixed[12] >> 4));
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > V2_MAX_BODY {
        return Err(format!("PROXY v2 address block of {len} bytes is too long"));
    }
    Ok(len)
}

/// The client's address from a version 2 header: the fixed part and its address block.
/// `Ok(None)` is a `LOCAL` command or an unspecified family: keep the connection's own
/// address.
pub fn parse_v2(fixed: &[u8; V2_FIXED], body: &[u8]) -> Result<Option<SocketAddr>, String> {
    let len = v2_body_len(fixed)?;
    if body.len() != len {
        return Err("PROXY v2 address block is truncated".into());
    }
    match fixed[12] & 0x0f {
        0 => return Ok(None),
        1 => {}
        command => return Err(format!("PROXY v2 command {command} is not LOCAL or PROXY")),
    }
    match fixed[13] >> 4 {
        1 => {
            let a = body.get(..12).ok_or("PROXY v2 IPv4 block is too short")?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([a[8], a[9]]),
            )))
        }
        2 => {
            let a = body.get(..36).ok_or("PROXY v2 IPv6 block is too short")?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                u16::from_be_bytes([a[32], a[33]]),
            )))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_names_the_client() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 25443\r\n";
        assert_eq!(
            parse_v1(line),
            Ok(Some("192.0.2.7:40001".parse().expect("addr")))
        );
        let six = b"PROXY TCP6 2001:db8::1 2001:db8::2 5 6\r\n";
        assert_eq!(
            parse_v1(six),
            Ok(Some("[2001:db8::1]:5".parse().expect("addr")))
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n"), Ok(None));
    }

    #[test]
    fn version_1_refuses_what_is_not_a_header() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 1\r\n",
            b"PROXY TCP4 ::1 ::1 1 1\r\n",
            b"PROXY TCP4 1.2.3.4\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 1",
        ] {
            assert!(parse_v1(bad).is_err(), "{bad:?}");
        }
        assert!(parse_v1(&[b'P'; 200]).is_err());
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> [u8; V2_FIXED] {
        let mut fixed = [0u8; V2_FIXED];
        fixed[..12].copy_from_slice(&V2_SIGNATURE);
        fixed[12] = 0x20 | command;
        fixed[13] = family;
        fixed[14..].copy_from_slice(&(body.len() as u16).to_be_bytes());
        fixed
    }

    #[test]
    fn version_2_names_the_client_or_keeps_the_peer() {
        let body = [192, 0, 2, 9, 10, 0, 0, 1, 0x9c, 0x41, 0x63, 0x43];
        assert_eq!(
            parse_v2(&v2(1, 0x11, &body), &body),
            Ok(Some("192.0.2.9:40001".parse().expect("addr")))
        );
        assert_eq!(parse_v2(&v2(0, 0x00, &[]), &[]), Ok(None));
        assert!(parse_v2(&v2(1, 0x11, &body[..4]), &body[..4]).is_err());
        let mut long = v2(1, 0x11, &[]);
        long[14..].copy_from_slice(&4000u16.to_be_bytes());
        assert!(v2_body_len(&long).is_err());
    }
}
