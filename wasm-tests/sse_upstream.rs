//! A tiny, fast SSE upstream for `make bench` (wasm-tests/bench.py): the streaming load.
//!
//! Standard library only; bench.py builds it with
//! `rustc -O --edition 2021 -o <tmpdir>/sse_upstream wasm-tests/sse_upstream.rs`.
//!
//! Usage: `sse_upstream [--port N] [--events N] [--gap-us N] [--watch-stdin]`
//!
//! Listens on 127.0.0.1:<port> (0, the default, picks a free port) and prints the bound
//! port alone on a line on stdout once it accepts connections. HTTP/1.1, keep-alive, one
//! thread per connection, TCP_NODELAY. Each request's head and body (Content-Length or
//! chunked) are read and ignored; every request is answered `200 text/event-stream` with
//! a chunked body of:
//!
//! * N events (`--events`, default 200) of exactly 20 bytes each, `data: {"c":"t012"}\n\n`;
//! * a usage event, `data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":N,...}}\n\n`;
//! * `data: [DONE]\n\n`;
//! * the zero-length chunk.
//!
//! A request whose path is `/v1/messages` (what the router sends to an upstream with
//! `format: anthropic`) is answered with an Anthropic Messages stream of the same content
//! instead, each event `event: <type>\ndata: <json>\n\n`:
//!
//! * `message_start` (id `msg_bench`, model `mock-small`, `usage.input_tokens` 10);
//! * `content_block_start` (index 0, an empty text block);
//! * N `content_block_delta` `text_delta` events, the texts `t000`, `t001`, ... of the
//!   OpenAI-style events above;
//! * `content_block_stop`, `message_delta` (`stop_reason` `end_turn`, `usage.output_tokens`
//!   N) and `message_stop`;
//! * the zero-length chunk.
//!
//! Every event is its own chunk and its own write(); the response head is a write of its
//! own too. `--gap-us` sleeps that long before each event after the first (0 = none); in
//! the Anthropic stream before each text delta after the first and once before the three
//! closing events (message_start, content_block_start and the first delta go out at once,
//! so both streams take N gaps and carry their first text at once).
//! A request may override both with the headers `x-sse-events` and `x-sse-gap-us`.
//! A request with `connection: close` gets its answer, then the connection is closed.
//! `--watch-stdin`: exit when stdin reaches end of file (the parent went away).

use std::env;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const MAX_HEAD: usize = 64 * 1024;
const HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
transfer-encoding: chunked\r\n\r\n";

struct Frames {
    /// `t000` .. `t999` events, each already framed as a chunk.
    events: Vec<Vec<u8>>,
    done: Vec<u8>,
    /// The Anthropic stream: `t000` .. `t999` text deltas and the fixed events, framed.
    deltas: Vec<Vec<u8>>,
    message_start: Vec<u8>,
    block_start: Vec<u8>,
    block_stop: Vec<u8>,
    message_stop: Vec<u8>,
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

fn usage_frame(events: u64) -> Vec<u8> {
    chunk(
        format!(
            "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":10,\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\n",
            events,
            events + 10
        )
        .as_bytes(),
    )
}

fn anthropic_event(name: &str, data: &str) -> Vec<u8> {
    chunk(format!("event: {}\ndata: {}\n\n", name, data).as_bytes())
}

fn message_delta_frame(events: u64) -> Vec<u8> {
    anthropic_event(
        "message_delta",
        &format!(
            "{{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}",
            events
        ),
    )
}

struct Request {
    events: u64,
    gap_us: u64,
    close: bool,
    /// The path was `/v1/messages`: answer an Anthropic Messages stream.
    anthropic: bool,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads one request (head and body); None at a clean end of the connection.
fn read_request(
    r: &mut BufReader<TcpStream>,
    events: u64,
    gap_us: u64,
) -> io::Result<Option<Request>> {
    let mut req = Request {
        events,
        gap_us,
        close: false,
        anthropic: false,
    };
    let mut line = String::new();
    let mut head_len = 0usize;
    let mut first = true;
    let mut content_length: u64 = 0;
    let mut chunked = false;
    loop {
        line.clear();
        let n = r.read_line(&mut line)?;
        if n == 0 {
            if first {
                return Ok(None);
            }
            return Err(bad("connection closed inside the request head"));
        }
        head_len += n;
        if head_len > MAX_HEAD {
            return Err(bad("request head too large"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if first {
            if l.is_empty() {
                continue; // tolerate stray CRLF between requests
            }
            first = false;
            if l.ends_with("HTTP/1.0") {
                req.close = true;
            }
            let path = l.split(' ').nth(1).unwrap_or("");
            req.anthropic = path.split('?').next() == Some("/v1/messages");
            continue;
        }
        if l.is_empty() {
            break;
        }
        let (name, value) = match l.split_once(':') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), v.trim()),
            None => return Err(bad("malformed header line")),
        };
        match name.as_str() {
            "content-length" => {
                content_length = value.parse().map_err(|_| bad("bad content-length"))?
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => req.close = value.eq_ignore_ascii_case("close"),
            "x-sse-events" => req.events = value.parse().map_err(|_| bad("bad x-sse-events"))?,
            "x-sse-gap-us" => req.gap_us = value.parse().map_err(|_| bad("bad x-sse-gap-us"))?,
            _ => {}
        }
    }
    if chunked {
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(bad("connection closed inside a chunked body"));
            }
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
                        break;
                    }
                }
                break;
            }
            discard(r, size + 2)?; // data and its CRLF
        }
    } else {
        discard(r, content_length)?;
    }
    Ok(Some(req))
}

fn discard(r: &mut BufReader<TcpStream>, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.by_ref().take(n), &mut io::sink())?;
    if copied != n {
        return Err(bad("connection closed inside the request body"));
    }
    Ok(())
}

fn serve(stream: TcpStream, frames: Arc<Frames>, events: u64, gap_us: u64) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    while let Some(req) = read_request(&mut r, events, gap_us)? {
        w.write_all(HEAD)?;
        if req.anthropic {
            answer_anthropic(&mut w, &frames, &req)?;
            if req.close {
                break;
            }
            continue;
        }
        for i in 0..req.events {
            if i > 0 && req.gap_us > 0 {
                thread::sleep(Duration::from_micros(req.gap_us));
            }
            w.write_all(&frames.events[(i % 1000) as usize])?;
        }
        if req.events > 0 && req.gap_us > 0 {
            thread::sleep(Duration::from_micros(req.gap_us));
        }
        w.write_all(&usage_frame(req.events))?;
        w.write_all(&frames.done)?;
        w.write_all(b"0\r\n\r\n")?;
        if req.close {
            break;
        }
    }
    Ok(())
}

fn answer_anthropic(w: &mut TcpStream, frames: &Frames, req: &Request) -> io::Result<()> {
    w.write_all(&frames.message_start)?;
    w.write_all(&frames.block_start)?;
    for i in 0..req.events {
        if i > 0 && req.gap_us > 0 {
            thread::sleep(Duration::from_micros(req.gap_us));
        }
        w.write_all(&frames.deltas[(i % 1000) as usize])?;
    }
    if req.events > 0 && req.gap_us > 0 {
        thread::sleep(Duration::from_micros(req.gap_us));
    }
    w.write_all(&frames.block_stop)?;
    w.write_all(&message_delta_frame(req.events))?;
    w.write_all(&frames.message_stop)?;
    w.write_all(b"0\r\n\r\n")
}

fn usage() -> ! {
    eprintln!("usage: sse_upstream [--port N] [--events N] [--gap-us N] [--watch-stdin]");
    process::exit(2);
}

fn main() {
    let mut port: u16 = 0;
    let mut events: u64 = 200;
    let mut gap_us: u64 = 0;
    let mut watch_stdin = false;
    let mut args = env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("sse_upstream: {} needs a number", what);
                usage()
            })
        };
        match a.as_str() {
            "--port" => port = u16::try_from(num("--port")).unwrap_or_else(|_| usage()),
            "--events" => events = num("--events"),
            "--gap-us" => gap_us = num("--gap-us"),
            "--watch-stdin" => watch_stdin = true,
            _ => usage(),
        }
    }

    let frames = Arc::new(Frames {
        events: (0..1000)
            .map(|i| chunk(format!("data: {{\"c\":\"t{:03}\"}}\n\n", i).as_bytes()))
            .collect(),
        done: chunk(b"data: [DONE]\n\n"),
        deltas: (0..1000)
            .map(|i| {
                anthropic_event(
                    "content_block_delta",
                    &format!(
                        "{{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"t{:03}\"}}}}",
                        i
                    ),
                )
            })
            .collect(),
        message_start: anthropic_event(
            "message_start",
            "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_bench\",\"type\":\"message\",\
\"role\":\"assistant\",\"model\":\"mock-small\",\"content\":[],\"stop_reason\":null,\
\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}",
        ),
        block_start: anthropic_event(
            "content_block_start",
            "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}",
        ),
        block_stop: anthropic_event(
            "content_block_stop",
            "{\"type\":\"content_block_stop\",\"index\":0}",
        ),
        message_stop: anthropic_event("message_stop", "{\"type\":\"message_stop\"}"),
    });
    debug_assert!(frames.events.iter().all(|f| f.len() == 2 + 2 + 20 + 2)); // "14\r\n" + 20 + CRLF

    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
        eprintln!("sse_upstream: cannot listen on 127.0.0.1:{}: {}", port, e);
        process::exit(1);
    });
    let bound = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{}", bound);
        let _ = out.flush();
    }
    if watch_stdin {
        thread::spawn(|| {
            let mut buf = [0u8; 256];
            let mut stdin = io::stdin().lock();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            process::exit(0);
        });
    }
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let frames = Arc::clone(&frames);
                thread::spawn(move || {
                    let _ = serve(stream, frames, events, gap_us);
                });
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}
