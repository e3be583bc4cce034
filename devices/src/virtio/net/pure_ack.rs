//! Recognises received frames that are bare TCP acknowledgements.
//!
//! Transmit polling (see `NetHandler::poll_tx`) lets a sending guest's frames wait
//! in the ring for the next poll. A frame the guest receives may call for an answer
//! (a request, a response, a ping, a TCP segment carrying data), and that answer
//! must not wait for the timer: so every received frame serves the transmit ring at
//! once, except a bare TCP ACK (no payload, no SYN/FIN/RST/URG), which only tells a
//! sender that it may send more — exactly the traffic polling is there to batch.
//!
//! Anything this parser does not fully understand (other protocols, IP fragments,
//! IPv6 extension headers, truncated headers) counts as "may need an answer".

/// Bytes after the vnet header that cover Ethernet + one VLAN tag + the largest
/// IPv4 header + the largest TCP header.
pub(crate) const PEEK_LEN: usize = 14 + 4 + 60 + 60;

const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
/// TCP flags that make a segment more than an acknowledgement.
const TCP_FIN_SYN_RST_URG: u8 = 0x01 | 0x02 | 0x04 | 0x20;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Whether `frame` (an Ethernet frame, possibly cut short after [`PEEK_LEN`]
/// bytes) is a TCP segment with no payload whose only flag of note is ACK.
pub(crate) fn is_pure_tcp_ack(frame: &[u8]) -> bool {
    pure_ack(frame).unwrap_or(false)
}

fn pure_ack(frame: &[u8]) -> Option<bool> {
    let mut l3 = 14;
    let mut ethertype = be16(frame, 12)?;
    if ethertype == ETHERTYPE_VLAN {
        ethertype = be16(frame, 16)?;
        l3 += 4;
    }
    let ip = frame.get(l3..)?;
    let (tcp_at, l4_len) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let fragmented = be16(ip, 6)? & 0x3fff != 0;
            if ihl < 20 || *ip.get(9)? != IPPROTO_TCP || fragmented {
                return Some(false);
            }
            (ihl, usize::from(be16(ip, 2)?).checked_sub(ihl)?)
        }
        ETHERTYPE_IPV6 => {
            if *ip.get(6)? != IPPROTO_TCP {
                return Some(false);
            }
            (40, usize::from(be16(ip, 4)?))
        }
        _ => return Some(false),
    };
    let tcp = ip.get(tcp_at..)?;
    let data_offset = usize::from(tcp.get(12)? >> 4) * 4;
    let flags = *tcp.get(13)?;
    let whole_header = tcp.len() >= data_offset;
    Some(data_offset >= 20 && whole_header && l4_len == data_offset && flags & TCP_FIN_SYN_RST_URG == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 TCP segment: `flags`, `payload` bytes of data, TCP options of `opts` bytes.
    fn ipv4_tcp(flags: u8, payload: usize, opts: usize) -> Vec<u8> {
        let tcp_len = 20 + opts;
        let total = 20 + tcp_len + payload;
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let mut ip = vec![0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[9] = IPPROTO_TCP;
        f.extend_from_slice(&ip);
        let mut tcp = vec![0u8; tcp_len];
        tcp[12] = ((tcp_len / 4) as u8) << 4;
        tcp[13] = flags;
        f.extend_from_slice(&tcp);
        f.extend(std::iter::repeat_n(0xab, payload));
        f
    }

    #[test]
    fn bare_acks_are_recognised_with_and_without_options() {
        assert!(is_pure_tcp_ack(&ipv4_tcp(0x10, 0, 0)));
        assert!(is_pure_tcp_ack(&ipv4_tcp(0x10, 0, 12))); // timestamps
        assert!(is_pure_tcp_ack(&ipv4_tcp(0x18, 0, 12))); // PSH without data
    }

    #[test]
    fn segments_that_may_need_an_answer_are_not_bare_acks() {
        assert!(!is_pure_tcp_ack(&ipv4_tcp(0x18, 1, 12)), "one byte of data (a TCP_RR response)");
        assert!(!is_pure_tcp_ack(&ipv4_tcp(0x12, 0, 20)), "SYN-ACK");
        assert!(!is_pure_tcp_ack(&ipv4_tcp(0x11, 0, 0)), "FIN");
        assert!(!is_pure_tcp_ack(&ipv4_tcp(0x04, 0, 0)), "RST");
        let mut udp = ipv4_tcp(0x10, 0, 0);
        udp[14 + 9] = 17;
        assert!(!is_pure_tcp_ack(&udp), "UDP");
        let mut arp = ipv4_tcp(0x10, 0, 0);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert!(!is_pure_tcp_ack(&arp), "ARP");
        let mut fragment = ipv4_tcp(0x10, 0, 0);
        fragment[14 + 6] = 0x20; // more fragments
        assert!(!is_pure_tcp_ack(&fragment), "fragment");
    }

    #[test]
    fn vlan_and_ipv6_acks_are_recognised() {
        let v4 = ipv4_tcp(0x10, 0, 0);
        let mut vlan = v4[..12].to_vec();
        vlan.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        vlan.extend_from_slice(&[0, 5]);
        vlan.extend_from_slice(&v4[12..]);
        assert!(is_pure_tcp_ack(&vlan));

        let mut v6 = vec![0u8; 14];
        v6[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        let mut ip = vec![0u8; 40];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&20u16.to_be_bytes());
        ip[6] = IPPROTO_TCP;
        v6.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20];
        tcp[12] = 5 << 4;
        tcp[13] = 0x10;
        v6.extend_from_slice(&tcp);
        assert!(is_pure_tcp_ack(&v6));
        v6[14 + 5] = 21; // one byte of payload
        v6.push(1);
        assert!(!is_pure_tcp_ack(&v6));
    }

    #[test]
    fn truncated_or_malformed_headers_never_count_as_bare_acks() {
        let ack = ipv4_tcp(0x10, 0, 0);
        for cut in 0..ack.len() {
            assert!(!is_pure_tcp_ack(&ack[..cut]), "cut at {cut}");
        }
        let mut bad_ihl = ack.clone();
        bad_ihl[14] = 0x41;
        assert!(!is_pure_tcp_ack(&bad_ihl));
        let mut short_total = ack.clone();
        short_total[14 + 2..14 + 4].copy_from_slice(&10u16.to_be_bytes());
        assert!(!is_pure_tcp_ack(&short_total));
        let mut bad_offset = ack;
        bad_offset[14 + 20 + 12] = 2 << 4;
        assert!(!is_pure_tcp_ack(&bad_offset));
    }
}
