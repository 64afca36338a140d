//! Builds Ethernet/IP/UDP frames around DNS messages, and checks them, independently of the
//! kernel program's own code.
use std::net::IpAddr;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// An Ethernet frame carrying `payload` in UDP from `src:sport` to `dst:dport`.
pub fn udp_frame(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let sum = udp_checksum(src, dst, &udp);
    udp[6..8].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::new();
    f.extend_from_slice(&NODE_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            ip.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 17, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = !fold(sum16(&ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(udp_len as u16).to_be_bytes());
            f.extend_from_slice(&[17, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed address families"),
    }
    f.extend_from_slice(&udp);
    f
}

pub fn sum16(b: &[u8]) -> u64 {
    b.chunks(2)
        .map(|c| ((c[0] as u64) << 8) | *c.get(1).unwrap_or(&0) as u64)
        .sum()
}

pub fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The UDP checksum of `udp` (header with a zero checksum field, then payload).
pub fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    let addr = |a: IpAddr| match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    };
    let mut s = sum16(&addr(src)) + sum16(&addr(dst)) + 17 + udp.len() as u64;
    let mut copy = udp.to_vec();
    copy[6] = 0;
    copy[7] = 0;
    s += sum16(&copy);
    match !fold(s) {
        0 => 0xffff,
        c => c,
    }
}

/// A parsed reply frame: addresses, ports and the DNS payload, with every checksum checked.
#[derive(Debug)]
pub struct Reply {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub ttl: u8,
    pub dns: Vec<u8>,
}

/// Decodes a frame and verifies its lengths and IPv4/UDP checksums.
pub fn parse_reply(f: &[u8]) -> Result<Reply, String> {
    let eth_dst: [u8; 6] = f[0..6].try_into().unwrap();
    let eth_src: [u8; 6] = f[6..12].try_into().unwrap();
    let (src, dst, l4, ttl): (IpAddr, IpAddr, usize, u8) = match u16::from_be_bytes([f[12], f[13]])
    {
        0x0800 => {
            let ip = &f[14..34];
            if fold(sum16(ip)) != 0xffff {
                return Err("bad IPv4 header checksum".into());
            }
            let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            if 14 + tot != f.len() {
                return Err(format!("IPv4 total length {tot} vs frame {}", f.len()));
            }
            let s: [u8; 4] = ip[12..16].try_into().unwrap();
            let d: [u8; 4] = ip[16..20].try_into().unwrap();
            (s.into(), d.into(), 34, ip[8])
        }
        0x86dd => {
            let ip = &f[14..54];
            let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            if 54 + plen != f.len() {
                return Err(format!("IPv6 payload length {plen} vs frame {}", f.len()));
            }
            let s: [u8; 16] = ip[8..24].try_into().unwrap();
            let d: [u8; 16] = ip[24..40].try_into().unwrap();
            (s.into(), d.into(), 54, ip[7])
        }
        other => return Err(format!("ethertype {other:#x}")),
    };
    let udp = &f[l4..];
    let ulen = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if ulen != udp.len() {
        return Err(format!("UDP length {ulen} vs {}", udp.len()));
    }
    let got = u16::from_be_bytes([udp[6], udp[7]]);
    let want = udp_checksum(src, dst, udp);
    if got != want {
        return Err(format!("UDP checksum {got:#06x}, expected {want:#06x}"));
    }
    Ok(Reply {
        src,
        dst,
        sport: u16::from_be_bytes([udp[0], udp[1]]),
        dport: u16::from_be_bytes([udp[2], udp[3]]),
        eth_dst,
        eth_src,
        ttl,
        dns: udp[8..].to_vec(),
    })
}
