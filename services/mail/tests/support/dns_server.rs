//! A tiny authoritative DNS server for tests, on 127.0.0.1 over UDP and TCP (same port).
//!
//! It answers from an in-memory zone: A, AAAA, MX and TXT records; names marked `servfail` get
//! SERVFAIL, names marked `silent` get no answer at all; a name not in the zone gets NXDOMAIN,
//! a name in the zone without records of the asked type gets NOERROR/NODATA. Negative answers
//! carry a synthetic SOA in the authority section (its minimum is the negative TTL). The query
//! parser takes one question and tolerates an EDNS OPT record (which it echoes). Every query is
//! counted per name, so tests can see whether a resolver asked again.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

const TYPE_A: u16 = 1;
const TYPE_SOA: u16 = 6;
const TYPE_MX: u16 = 15;
const TYPE_TXT: u16 = 16;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const RCODE_NOERROR: u8 = 0;
const RCODE_FORMERR: u8 = 1;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_NOTIMP: u8 = 4;
/// TTL and SOA minimum of negative answers: 0, so that hickory's own cache keeps no negative
/// answer and tests see the caching of the code under test.
const NEGATIVE_TTL: u32 = 0;

/// One entry of the zone.
#[derive(Debug, Clone)]
pub struct Record {
    name: String,
    ttl: u32,
    data: RecordData,
}

#[derive(Debug, Clone)]
enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx { preference: u16, exchange: String },
    Txt(String),
    NxDomain,
    ServFail,
    Silent,
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Record {
    fn new(name: &str, ttl: u32, data: RecordData) -> Self {
        Self { name: normalise(name), ttl, data }
    }

    /// `exchange` "." makes a null MX (RFC 7505).
    pub fn mx(name: &str, preference: u16, exchange: &str, ttl: u32) -> Self {
        Self::new(name, ttl, RecordData::Mx { preference, exchange: normalise(exchange) })
    }

    pub fn a(name: &str, address: Ipv4Addr, ttl: u32) -> Self {
        Self::new(name, ttl, RecordData::A(address))
    }

    pub fn aaaa(name: &str, address: Ipv6Addr, ttl: u32) -> Self {
        Self::new(name, ttl, RecordData::Aaaa(address))
    }

    /// Makes a name exist without A, AAAA or MX records.
    pub fn txt(name: &str, text: &str, ttl: u32) -> Self {
        Self::new(name, ttl, RecordData::Txt(text.to_owned()))
    }

    /// Documents that a name does not exist (every name not in the zone gets NXDOMAIN anyway).
    pub fn nxdomain(name: &str) -> Self {
        Self::new(name, 0, RecordData::NxDomain)
    }

    /// Every query for this name is answered with SERVFAIL.
    pub fn servfail(name: &str) -> Self {
        Self::new(name, 0, RecordData::ServFail)
    }

    /// Queries for this name are counted and never answered.
    pub fn silent(name: &str) -> Self {
        Self::new(name, 0, RecordData::Silent)
    }

    fn record_type(&self) -> Option<u16> {
        match self.data {
            RecordData::A(_) => Some(TYPE_A),
            RecordData::Aaaa(_) => Some(TYPE_AAAA),
            RecordData::Mx { .. } => Some(TYPE_MX),
            RecordData::Txt(_) => Some(TYPE_TXT),
            RecordData::NxDomain | RecordData::ServFail | RecordData::Silent => None,
        }
    }
}

struct Zone {
    records: Vec<Record>,
    queries: Mutex<HashMap<String, usize>>,
}

/// A running server; stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Zone>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Starts serving on 127.0.0.1 (UDP and TCP on one port). Must be called inside a tokio runtime.
    pub fn start(records: Vec<Record>) -> DnsServer {
        let (udp, tcp) = bind_udp_and_tcp_on_one_port();
        let addr = udp.local_addr().expect("udp local addr");
        let zone = Arc::new(Zone { records, queries: Mutex::new(HashMap::new()) });
        let udp = UdpSocket::from_std(udp).expect("tokio udp socket");
        let tcp = TcpListener::from_std(tcp).expect("tokio tcp listener");
        let tasks = vec![tokio::spawn(serve_udp(udp, zone.clone())), tokio::spawn(serve_tcp(tcp, zone.clone()))];
        DnsServer { addr, zone, tasks }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries received for `name` so far, of any type, over UDP and TCP.
    pub fn queries_for(&self, name: &str) -> usize {
        self.zone.queries.lock().expect("query counter").get(&normalise(name)).copied().unwrap_or(0)
    }

    /// All queries received so far.
    pub fn total_queries(&self) -> usize {
        self.zone.queries.lock().expect("query counter").values().sum()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn bind_udp_and_tcp_on_one_port() -> (std::net::UdpSocket, std::net::TcpListener) {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp");
        let port = udp.local_addr().expect("udp local addr").port();
        if let Ok(tcp) = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            udp.set_nonblocking(true).expect("nonblocking udp");
            tcp.set_nonblocking(true).expect("nonblocking tcp");
            return (udp, tcp);
        }
    }
    panic!("no port free for both udp and tcp on 127.0.0.1");
}

async fn serve_udp(socket: UdpSocket, zone: Arc<Zone>) {
    let mut buffer = vec![0u8; 65_535];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buffer).await else { continue };
        let Some((mut response, max_udp_len)) = zone.answer(&buffer[..len]) else { continue };
        if response.len() > max_udp_len {
            // Header and question only, with TC set: the client retries over TCP.
            response = truncated(&buffer[..len]);
        }
        let _ = socket.send_to(&response, peer).await;
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<Zone>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(serve_tcp_connection(stream, zone.clone()));
    }
}

async fn serve_tcp_connection(mut stream: TcpStream, zone: Arc<Zone>) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some((response, _)) = zone.answer(&query) else { continue };
        let Ok(response_len) = u16::try_from(response.len()) else { return };
        if stream.write_all(&response_len.to_be_bytes()).await.is_err() || stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

/// A parsed query: what the answer needs from it.
struct Query<'a> {
    id: u16,
    /// Opcode and RD bit of the query's flags.
    flags: u16,
    /// The question exactly as sent (name case preserved), type and class included.
    raw_question: &'a [u8],
    name: String,
    record_type: u16,
    /// The EDNS UDP payload size when the query had an OPT record.
    edns_payload_opt: Option<u16>,
}

impl Zone {
    /// The response to a query, and the largest UDP response the client accepts; `None` when
    /// the query is unreadable or the name is `silent`.
    fn answer(&self, packet: &[u8]) -> Option<(Vec<u8>, usize)> {
        let query = match parse_query(packet) {
            Ok(query) => query,
            Err(Some(id)) => return Some((header_only(id, RCODE_FORMERR), 512)),
            Err(None) => return None,
        };
        *self.queries.lock().expect("query counter").entry(query.name.clone()).or_default() += 1;
        let max_udp_len = usize::from(query.edns_payload_opt.unwrap_or(512).max(512));
        let opcode = (query.flags >> 11) & 0xF;
        if opcode != 0 {
            return Some((response(&query, RCODE_NOTIMP, &[], &[]), max_udp_len));
        }
        let named: Vec<&Record> = self.records.iter().filter(|record| record.name == query.name).collect();
        if named.iter().any(|record| matches!(record.data, RecordData::Silent)) {
            return None;
        }
        if named.iter().any(|record| matches!(record.data, RecordData::ServFail)) {
            return Some((response(&query, RCODE_SERVFAIL, &[], &[]), max_udp_len));
        }
        let exists = named.iter().any(|record| record.record_type().is_some());
        if !exists {
            let soa = soa_record(&query.name);
            return Some((response(&query, RCODE_NXDOMAIN, &[], &[soa]), max_udp_len));
        }
        let answers: Vec<Vec<u8>> = named
            .iter()
            .filter(|record| record.record_type() == Some(query.record_type))
            .map(|record| encode_record(record))
            .collect();
        if answers.is_empty() {
            let soa = soa_record(&query.name);
            return Some((response(&query, RCODE_NOERROR, &[], &[soa]), max_udp_len));
        }
        Some((response(&query, RCODE_NOERROR, &answers, &[]), max_udp_len))
    }
}

fn read_u16(packet: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]))
}

/// Reads a (possibly compressed) name at `at`; returns it (lowercase, no trailing dot) and the
/// offset just after it in the original position.
fn read_name(packet: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    let mut end_opt = None;
    for _ in 0..128 {
        let len = *packet.get(at)?;
        match len {
            0 => {
                return Some((labels.join("."), end_opt.unwrap_or(at + 1)));
            }
            len if len & 0xC0 == 0xC0 => {
                let pointer = usize::from(read_u16(packet, at)? & 0x3FFF);
                end_opt.get_or_insert(at + 2);
                at = pointer;
            }
            len if len & 0xC0 == 0 => {
                let label = packet.get(at + 1..at + 1 + usize::from(len))?;
                labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                at += 1 + usize::from(len);
            }
            _ => return None,
        }
    }
    None
}

/// `Err(Some(id))`: a query we cannot read but can answer FORMERR to; `Err(None)`: ignore.
fn parse_query(packet: &[u8]) -> Result<Query<'_>, Option<u16>> {
    let id = read_u16(packet, 0).ok_or(None)?;
    let flags = read_u16(packet, 2).ok_or(None)?;
    if flags & 0x8000 != 0 {
        return Err(None); // a response, not a query
    }
    let counts: Vec<u16> = (0..4).map(|i| read_u16(packet, 4 + 2 * i)).collect::<Option<_>>().ok_or(Some(id))?;
    let (num_questions, num_answers, num_authorities, num_additionals) = (counts[0], counts[1], counts[2], counts[3]);
    if num_questions != 1 {
        return Err(Some(id));
    }
    let (name, after_name) = read_name(packet, 12).ok_or(Some(id))?;
    let record_type = read_u16(packet, after_name).ok_or(Some(id))?;
    let _class = read_u16(packet, after_name + 2).ok_or(Some(id))?;
    let question_end = after_name + 4;
    let raw_question = &packet[12..question_end];
    let mut at = question_end;
    let mut edns_payload_opt = None;
    for _ in 0..(usize::from(num_answers) + usize::from(num_authorities) + usize::from(num_additionals)) {
        let (_, after) = read_name(packet, at).ok_or(Some(id))?;
        let rr_type = read_u16(packet, after).ok_or(Some(id))?;
        let rr_class = read_u16(packet, after + 2).ok_or(Some(id))?;
        let rdata_len = read_u16(packet, after + 8).ok_or(Some(id))?;
        if rr_type == TYPE_OPT {
            edns_payload_opt = Some(rr_class);
        }
        at = after + 10 + usize::from(rdata_len);
        if at > packet.len() {
            return Err(Some(id));
        }
    }
    Ok(Query { id, flags: flags & 0x7900, raw_question, name, record_type, edns_payload_opt })
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name.split('.').filter(|label| !label.is_empty()) {
        out.push(u8::try_from(label.len()).expect("label of at most 63 bytes"));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn encode_resource(name: &str, record_type: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_name(name, &mut out);
    out.extend_from_slice(&record_type.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&u16::try_from(rdata.len()).expect("rdata length").to_be_bytes());
    out.extend_from_slice(rdata);
    out
}

fn encode_record(record: &Record) -> Vec<u8> {
    let mut rdata = Vec::new();
    let record_type = match &record.data {
        RecordData::A(address) => {
            rdata.extend_from_slice(&address.octets());
            TYPE_A
        }
        RecordData::Aaaa(address) => {
            rdata.extend_from_slice(&address.octets());
            TYPE_AAAA
        }
        RecordData::Mx { preference, exchange } => {
            rdata.extend_from_slice(&preference.to_be_bytes());
            encode_name(exchange, &mut rdata);
            TYPE_MX
        }
        RecordData::Txt(text) => {
            for chunk in text.as_bytes().chunks(255) {
                rdata.push(u8::try_from(chunk.len()).expect("chunk of at most 255 bytes"));
                rdata.extend_from_slice(chunk);
            }
            TYPE_TXT
        }
        RecordData::NxDomain | RecordData::ServFail | RecordData::Silent => unreachable!("not an answer record"),
    };
    encode_resource(&record.name, record_type, record.ttl, &rdata)
}

/// A synthetic SOA for the zone the name is in (taken as its last two labels).
fn soa_record(name: &str) -> Vec<u8> {
    let labels: Vec<&str> = name.split('.').collect();
    let zone = labels[labels.len().saturating_sub(2)..].join(".");
    let mut rdata = Vec::new();
    encode_name(&format!("ns.{zone}"), &mut rdata);
    encode_name(&format!("hostmaster.{zone}"), &mut rdata);
    for value in [1u32, 3600, 600, 86_400, NEGATIVE_TTL] {
        rdata.extend_from_slice(&value.to_be_bytes());
    }
    encode_resource(&zone, TYPE_SOA, NEGATIVE_TTL, &rdata)
}

fn opt_record() -> Vec<u8> {
    let mut out = vec![0]; // root name
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&1232u16.to_be_bytes()); // our UDP payload size
    out.extend_from_slice(&0u32.to_be_bytes()); // extended rcode, version 0, no flags
    out.extend_from_slice(&0u16.to_be_bytes()); // no options
    out
}

fn response(query: &Query<'_>, rcode: u8, answers: &[Vec<u8>], authorities: &[Vec<u8>]) -> Vec<u8> {
    // QR, the query's opcode and RD, AA, RA, rcode.
    let flags = 0x8000 | query.flags | 0x0400 | 0x0080 | u16::from(rcode);
    let num_additionals = u16::from(query.edns_payload_opt.is_some());
    let mut out = Vec::new();
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    for count in [1, answers.len(), authorities.len(), usize::from(num_additionals)] {
        out.extend_from_slice(&u16::try_from(count).expect("record count").to_be_bytes());
    }
    out.extend_from_slice(query.raw_question);
    for record in answers.iter().chain(authorities) {
        out.extend_from_slice(record);
    }
    if query.edns_payload_opt.is_some() {
        out.extend_from_slice(&opt_record());
    }
    out
}

fn header_only(id: u16, rcode: u8) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(0x8000 | u16::from(rcode)).to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    out
}

/// A TC response echoing the question, telling the client to ask again over TCP.
fn truncated(packet: &[u8]) -> Vec<u8> {
    let Ok(query) = parse_query(packet) else { return header_only(read_u16(packet, 0).unwrap_or(0), RCODE_FORMERR) };
    let mut out = Vec::new();
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&(0x8000 | query.flags | 0x0400 | 0x0200 | 0x0080).to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(query.raw_question);
    out
}
