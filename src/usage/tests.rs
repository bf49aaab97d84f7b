use super::*;

/// A stream as its events (each with its blank line), which of them is OpenAI's usage-only
/// chunk, and the usage it reports.
struct Fixture {
    name: String,
    events: Vec<String>,
    usage_only: Option<usize>,
    usage: Usage,
}

impl Fixture {
    fn bytes(&self) -> Vec<u8> {
        self.events.concat().into_bytes()
    }

    /// What the client gets with `strip`: the stream without the usage-only event.
    fn stripped(&self) -> Vec<u8> {
        let kept = self
            .events
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.usage_only);
        kept.map(|(_, e)| e.as_str())
            .collect::<String>()
            .into_bytes()
    }
}

/// An event of `lines`, each ended by `eol`, and the blank line.
fn event(eol: &str, lines: &[&str]) -> String {
    let mut out: String = lines.iter().map(|l| format!("{l}{eol}")).collect();
    out.push_str(eol);
    out
}

const CHAT_CHUNK: &str = r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1720000000,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_1","#;

fn openai_chat(eol: &str) -> Fixture {
    let chunk = |rest: &str| format!("data: {CHAT_CHUNK}{rest}");
    let events = vec![
        event(eol, &[": OPENROUTER PROCESSING"]),
        event(
            eol,
            &[&chunk(
                r#""choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            )],
        ),
        event(
            eol,
            &[&chunk(
                r#""choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            )],
        ),
        // Data on two lines; the text mentions a usage object (escaped: not a key).
        event(
            eol,
            &[
                &chunk(r#""choices":[{"index":0,"delta":{"content":" \"usage\": {"},"#),
                r#"data: "logprobs":null,"finish_reason":null}],"usage":null}"#,
            ],
        ),
        event(
            eol,
            &[
                "id: 4",
                &chunk(
                    r#""choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
                ),
            ],
        ),
        event(
            eol,
            &[&chunk(
                r#""choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":300,"total_tokens":1500,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":256,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#,
            )],
        ),
        event(eol, &["data: [DONE]"]),
    ];
    Fixture {
        name: format!("openai chat {eol:?}"),
        events,
        usage_only: Some(5),
        usage: Usage {
            prompt: 1200,
            completion: 300,
            total: 1500,
            cached: Some(1024),
            reasoning: Some(256),
        },
    }
}

/// The usage-only chunk on several data lines, `data:` without a space, a comment inside.
fn openai_chat_split_usage(eol: &str) -> Fixture {
    let events = vec![
        event(
            eol,
            &[r#"data:{"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}"#],
        ),
        event(
            eol,
            &[
                r#"data: {"id":"x","choices": [ ],"#,
                ": a comment",
                r#"data: "usage""#,
                r#"data:   : {"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#,
            ],
        ),
        event(eol, &["data: [DONE]"]),
    ];
    Fixture {
        name: format!("openai chat, usage on several lines {eol:?}"),
        events,
        usage_only: Some(1),
        usage: Usage {
            prompt: 7,
            completion: 3,
            total: 10,
            cached: None,
            reasoning: None,
        },
    }
}

/// Short enough to split at every pair of boundaries.
fn openai_short(eol: &str) -> Fixture {
    let events = vec![
        event(
            eol,
            &[r#"data: {"choices":[{"delta":{"content":"a"}}],"usage":null}"#],
        ),
        event(
            eol,
            &[r#"data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#],
        ),
        event(eol, &["data: [DONE]"]),
    ];
    Fixture {
        name: format!("openai short {eol:?}"),
        events,
        usage_only: Some(1),
        usage: Usage {
            prompt: 3,
            completion: 2,
            total: 5,
            cached: None,
            reasoning: None,
        },
    }
}

fn responses(eol: &str) -> Fixture {
    let ev =
        |name: &str, data: &str| event(eol, &[&format!("event: {name}"), &format!("data: {data}")]);
    let pending = r#"{"id":"resp_1","object":"response","created_at":1741290958,"status":"in_progress","model":"gpt-4.1-2025-04-14","output":[],"usage":null}"#;
    let events = vec![
        ev(
            "response.created",
            &format!(r#"{{"type":"response.created","sequence_number":0,"response":{pending}}}"#),
        ),
        ev(
            "response.in_progress",
            &format!(
                r#"{{"type":"response.in_progress","sequence_number":1,"response":{pending}}}"#
            ),
        ),
        ev(
            "response.output_item.added",
            r#"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","role":"assistant","content":[]}}"#,
        ),
        ev(
            "response.output_text.delta",
            r#"{"type":"response.output_text.delta","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi \"usage\":{"}"#,
        ),
        ev(
            "response.output_text.done",
            r#"{"type":"response.output_text.done","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"text":"Hi \"usage\":{"}"#,
        ),
        ev(
            "response.completed",
            r#"{"type":"response.completed","sequence_number":5,"response":{"id":"resp_1","object":"response","created_at":1741290958,"status":"completed","model":"gpt-4.1-2025-04-14","output":[{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi \"usage\":{","annotations":[]}]}],"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":12},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":64},"total_tokens":123}}}"#,
        ),
    ];
    Fixture {
        name: format!("responses {eol:?}"),
        events,
        usage_only: None,
        usage: Usage {
            prompt: 36,
            completion: 87,
            total: 123,
            cached: Some(12),
            reasoning: Some(64),
        },
    }
}

fn anthropic(eol: &str) -> Fixture {
    let ev =
        |name: &str, data: &str| event(eol, &[&format!("event: {name}"), &format!("data: {data}")]);
    let events = vec![
        ev(
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}}}"#,
        ),
        ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        ),
        ev("ping", r#"{"type": "ping"}"#),
        ev(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
        ),
        ev(
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
        ),
        ev(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":55}}"#,
        ),
        ev("message_stop", r#"{"type":"message_stop"}"#),
    ];
    Fixture {
        name: format!("anthropic {eol:?}"),
        events,
        usage_only: None,
        usage: Usage {
            prompt: 2112,
            completion: 55,
            total: 2167,
            cached: Some(2000),
            reasoning: None,
        },
    }
}

const EOLS: [&str; 3] = ["\n", "\r\n", "\r"];

fn fixtures() -> Vec<Fixture> {
    EOLS.iter()
        .flat_map(|eol| {
            [
                openai_chat(eol),
                openai_chat_split_usage(eol),
                openai_short(eol),
                responses(eol),
                anthropic(eol),
            ]
        })
        .collect()
}

/// What a stream fed in `chunks` (the last with `end_of_stream`) gives: the usage, what the
/// client gets, and every push's output.
struct Fed {
    usage: Option<Usage>,
    sent: Vec<u8>,
    outputs: Vec<Vec<u8>>,
    edits: Vec<Edit>,
    stripped: bool,
}

fn feed(strip: bool, chunks: &[&[u8]]) -> Fed {
    let mut s = StreamUsage::new(strip);
    let mut fed = Fed {
        usage: None,
        sent: Vec::new(),
        outputs: Vec::new(),
        edits: Vec::new(),
        stripped: false,
    };
    for (i, chunk) in chunks.iter().enumerate() {
        let edit = s.push(chunk, i + 1 == chunks.len());
        let output = match &edit {
            Edit::Unchanged => chunk.to_vec(),
            Edit::Replace(bytes) => bytes.clone(),
        };
        fed.sent.extend_from_slice(&output);
        fed.outputs.push(output);
        fed.edits.push(edit);
    }
    fed.usage = s.usage();
    fed.stripped = s.stripped();
    fed
}

/// The chunks of `bytes` cut at `cuts` (ascending).
fn cut<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut from = 0;
    for &at in cuts {
        chunks.push(&bytes[from..at]);
        from = at;
    }
    chunks.push(&bytes[from..]);
    chunks
}

/// Checks one chunking of `f` in both modes against what the fixture says.
fn check(f: &Fixture, chunks: &[&[u8]], what: &str) {
    let plain = feed(false, chunks);
    assert_eq!(plain.usage, Some(f.usage), "{} {what}", f.name);
    assert!(
        plain.edits.iter().all(|e| *e == Edit::Unchanged),
        "{} {what}: without strip nothing changes",
        f.name
    );
    let strip = feed(true, chunks);
    assert_eq!(strip.usage, Some(f.usage), "{} {what} (strip)", f.name);
    assert!(
        strip.sent == f.stripped(),
        "{} {what}: sent {:?}",
        f.name,
        String::from_utf8_lossy(&strip.sent)
    );
    assert_eq!(strip.stripped, f.usage_only.is_some(), "{} {what}", f.name);
    // Nothing of the usage-only event leaves, not even in part.
    for out in &strip.outputs {
        let text = String::from_utf8_lossy(out);
        assert!(
            !text.contains(r#""choices":[]"#) && !text.contains(r#""choices": [ ]"#),
            "{} {what}: {text:?}",
            f.name
        );
    }
}

#[test]
fn fixtures_in_one_chunk() {
    for f in fixtures() {
        let bytes = f.bytes();
        check(&f, &[&bytes], "one chunk");
        // The end of the stream in a chunk of its own.
        let fed = feed(true, &[&bytes, b""]);
        assert_eq!(fed.usage, Some(f.usage), "{}", f.name);
        assert_eq!(fed.sent, f.stripped(), "{}", f.name);
    }
}

#[test]
fn fixtures_split_at_every_boundary() {
    for f in fixtures() {
        let bytes = f.bytes();
        for at in 0..=bytes.len() {
            check(&f, &cut(&bytes, &[at]), &format!("cut at {at}"));
        }
    }
}

#[test]
fn short_fixtures_split_at_every_pair_of_boundaries() {
    for eol in EOLS {
        let f = openai_short(eol);
        let bytes = f.bytes();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                check(&f, &cut(&bytes, &[a, b]), &format!("cut at {a}, {b}"));
            }
        }
    }
}

#[test]
fn fixtures_in_one_byte_chunks() {
    for f in fixtures() {
        let bytes = f.bytes();
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        check(&f, &chunks, "1-byte chunks");
    }
}

/// A small linear congruential generator: the same "random" chunkings on every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

#[test]
fn long_streams_split_at_random() {
    let mut rng = Lcg(42);
    for eol in EOLS {
        // A long chat stream: many content chunks, then usage and [DONE].
        let mut f = openai_chat(eol);
        let content = f.events[2].clone();
        let tail = f.events.split_off(3);
        f.events.extend(std::iter::repeat_n(content, 200));
        f.events.extend(tail);
        f.usage_only = Some(f.events.len() - 2);
        let long = [f, anthropic(eol), responses(eol)];
        for f in &long {
            let bytes = f.bytes();
            for round in 0..40 {
                let mut cuts = Vec::new();
                let mut at = 0;
                loop {
                    at += 1 + rng.below(if round % 2 == 0 { 8 } else { 300 });
                    if at >= bytes.len() {
                        break;
                    }
                    cuts.push(at);
                }
                let mut chunks = cut(&bytes, &cuts);
                if round % 3 == 0 {
                    chunks.push(b"");
                }
                check(f, &chunks, &format!("round {round}"));
            }
        }
    }
}

#[test]
fn strip_passes_whole_events_without_usage_only_chunk_unchanged() {
    for eol in ["\n", "\r\n"] {
        for f in [responses(eol), anthropic(eol)] {
            let chunks: Vec<&[u8]> = f.events.iter().map(|e| e.as_bytes()).collect();
            let fed = feed(true, &chunks);
            assert!(
                fed.edits.iter().all(|e| *e == Edit::Unchanged),
                "{}",
                f.name
            );
            assert_eq!(fed.sent, f.bytes());
            assert!(!fed.stripped);
        }
    }
}

#[test]
fn strip_of_whole_event_chunks_changes_only_the_usage_only_chunk() {
    let f = openai_chat("\n");
    let chunks: Vec<&[u8]> = f.events.iter().map(|e| e.as_bytes()).collect();
    let fed = feed(true, &chunks);
    for (i, edit) in fed.edits.iter().enumerate() {
        let want = if Some(i) == f.usage_only {
            Edit::Replace(Vec::new())
        } else {
            Edit::Unchanged
        };
        assert_eq!(*edit, want, "event {i}");
    }
}

#[test]
fn a_chunk_ending_mid_event_is_held_until_the_event_ends() {
    let mut s = StreamUsage::new(true);
    assert_eq!(
        s.push(b"data: {\"a\":1}\n\ndata: {\"b\"", false),
        Edit::Replace(b"data: {\"a\":1}\n\n".to_vec())
    );
    assert_eq!(s.push(b":2}\n", false), Edit::Replace(Vec::new()));
    assert_eq!(
        s.push(b"\n", false),
        Edit::Replace(b"data: {\"b\":2}\n\n".to_vec())
    );
    // An incomplete last event goes as it is at the end of the stream.
    assert_eq!(s.push(b"data: {\"c\"", false), Edit::Replace(Vec::new()));
    assert_eq!(s.push(b"", true), Edit::Replace(b"data: {\"c\"".to_vec()));
}

#[test]
fn a_usage_chunk_with_content_is_counted_not_stripped() {
    // Some OpenAI-compatible servers report usage in the last content chunk.
    let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n\
                  data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1,\"total_tokens\":5}}\n\n\
                  data: [DONE]\n\n";
    let fed = feed(true, &[stream.as_bytes()]);
    assert_eq!(fed.sent, stream.as_bytes());
    assert!(!fed.stripped);
    assert_eq!(
        fed.usage.map(|u| (u.prompt, u.completion, u.total)),
        Some((4, 1, 5))
    );
}

#[test]
fn later_usage_overrides_earlier() {
    let stream = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\n\
                  data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n";
    let fed = feed(false, &[stream.as_bytes()]);
    assert_eq!(
        fed.usage,
        Some(Usage {
            prompt: 4,
            completion: 2,
            total: 6,
            cached: None,
            reasoning: None
        })
    );
}

#[test]
fn anthropic_message_delta_overrides_the_fields_it_repeats() {
    let stream = "event: message_start\n\
                  data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n\
                  event: message_delta\n\
                  data: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":30,\"output_tokens\":20}}\n\n";
    let fed = feed(false, &[stream.as_bytes()]);
    assert_eq!(
        fed.usage,
        Some(Usage {
            prompt: 45,
            completion: 20,
            total: 65,
            cached: Some(30),
            reasoning: None
        })
    );
}

/// A Responses `response.completed` event over MAX_EVENT_BYTES, its usage at the end.
fn oversized_stream() -> Vec<u8> {
    let text = "x".repeat(MAX_EVENT_BYTES + 1000);
    let mut stream = responses("\n").events[..2].concat();
    stream.push_str(&format!(
        "event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"output\":[{{\"content\":[{{\"type\":\"output_text\",\"text\":\"{text}\"}}]}}],\"usage\":{{\"input_tokens\":5,\"output_tokens\":300000,\"output_tokens_details\":{{\"reasoning_tokens\":0}},\"total_tokens\":300005}}}}}}\n\n"
    ));
    stream.into_bytes()
}

#[test]
fn an_oversized_event_gives_its_usage_from_its_tail_and_memory_stays_bounded() {
    let stream = oversized_stream();
    let want = Some(Usage {
        prompt: 5,
        completion: 300_000,
        total: 300_005,
        cached: None,
        reasoning: Some(0),
    });
    for strip in [false, true] {
        for size in [stream.len(), 64 * 1024, 1000, 4097] {
            let mut s = StreamUsage::new(strip);
            let mut sent = Vec::new();
            let chunks: Vec<&[u8]> = stream.chunks(size).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                match s.push(chunk, i + 1 == chunks.len()) {
                    Edit::Unchanged => sent.extend_from_slice(chunk),
                    Edit::Replace(bytes) => sent.extend_from_slice(&bytes),
                }
                assert!(s.held_bytes() <= MAX_EVENT_BYTES, "{} held", s.held_bytes());
            }
            assert_eq!(s.usage(), want, "strip {strip}, chunks of {size}");
            assert!(sent == stream, "strip {strip}, chunks of {size}");
            assert_eq!(s.held_bytes(), 0);
        }
    }
}

#[test]
fn an_event_at_the_size_limit_is_still_parsed_whole() {
    // The usage object at the start of the event: only an exact parse finds it.
    let head =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1},\"pad\":\"";
    let foot = "\"}\n";
    let pad = "p".repeat(MAX_EVENT_BYTES - head.len() - foot.len());
    let stream = format!("{head}{pad}{foot}\n");
    let fed = feed(true, &stream.as_bytes().chunks(5000).collect::<Vec<_>>());
    assert_eq!(fed.usage.map(|u| u.total), Some(3));
    assert!(fed.stripped);
    assert!(fed.sent.is_empty());
}

#[test]
fn usage_in_json_reads_every_response_format() {
    let cases: &[(&str, Usage)] = &[
        (
            r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#,
            Usage {
                prompt: 19,
                completion: 10,
                total: 29,
                cached: Some(0),
                reasoning: Some(0),
            },
        ),
        (
            r#"{"id":"cmpl-1","object":"text_completion","choices":[{"text":"x","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#,
            Usage {
                prompt: 5,
                completion: 7,
                total: 12,
                cached: None,
                reasoning: None,
            },
        ),
        (
            r#"{"id":"resp_1","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"x"}]}],"usage":{"input_tokens":328,"input_tokens_details":{"cached_tokens":128},"output_tokens":52,"output_tokens_details":{"reasoning_tokens":32},"total_tokens":380}}"#,
            Usage {
                prompt: 328,
                completion: 52,
                total: 380,
                cached: Some(128),
                reasoning: Some(32),
            },
        ),
        (
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#,
            Usage {
                prompt: 8,
                completion: 0,
                total: 8,
                cached: None,
                reasoning: None,
            },
        ),
        (
            r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"x"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"cache_creation_input_tokens":20,"cache_read_input_tokens":1000,"output_tokens":9,"service_tier":"standard"}}"#,
            Usage {
                prompt: 1023,
                completion: 9,
                total: 1032,
                cached: Some(1000),
                reasoning: None,
            },
        ),
        // Numbers as some compatible servers send them; an odd field does not spoil the rest.
        (
            r#"{"usage":{"prompt_tokens":"4","completion_tokens":2.0,"total_tokens":6,"cost":0.001,"prompt_tokens_details":null}}"#,
            Usage {
                prompt: 4,
                completion: 2,
                total: 6,
                cached: None,
                reasoning: None,
            },
        ),
    ];
    for (body, want) in cases {
        assert_eq!(usage_in_json(body.as_bytes()), Some(*want), "{body}");
        assert_eq!(usage_of(body.as_bytes()), Some(*want), "{body}");
    }
    for body in [
        "",
        "not json",
        r#"{"usage":null}"#,
        r#"{"usage":{}}"#,
        r#"{"error":{"message":"x"}}"#,
        // Only the top-level usage counts.
        r#"{"choices":[{"usage":{"total_tokens":3}}]}"#,
    ] {
        assert_eq!(usage_in_json(body.as_bytes()), None, "{body}");
    }
}

#[test]
fn usage_of_scans_the_end_of_a_body() {
    let total = |tail: &str| usage_of(tail.as_bytes()).map(|u| u.total);
    let cases: &[(&str, Option<u64>)] = &[
        (
            r#"{"id":"x","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#,
            Some(18),
        ),
        (r#"{"usage":{"prompt_tokens":11,"completion_tokens":7}}"#, Some(18)),
        (
            r#"{"usage":{"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens":1}}"#,
            Some(6),
        ),
        (r#"{"type":"message","usage":{"input_tokens":20,"output_tokens":4}}"#, Some(24)),
        (
            "data: {\"choices\":[]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\ndata: [DONE]\n\n",
            Some(5),
        ),
        (
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n",
            Some(9),
        ),
        // The last usage wins.
        (r#"{"usage":{"total_tokens":1}} {"usage":{"total_tokens":2}}"#, Some(2)),
        // ... unless it is not an object with counts.
        (r#"{"usage":{"total_tokens":1}} {"usage":null}"#, Some(1)),
        (r#"{"usage":{"total_tokens":1}} {"usage":{"total_tokens":"#, Some(1)),
        // Starting mid-document; braces in strings do not end the object.
        (r#"ng":"x"}],"usage" : {"note":"}{","total_tokens":4}}"#, Some(4)),
        (r#"{"usage":null}"#, None),
        (r#"{"usage":{}}"#, None),
        (r#"{"choices":[]}"#, None),
        (r#"{"usage":{"total_tokens":"#, None),
        (r#"{"text":"\"usage\":{\"total_tokens\":3}"}"#, None),
        ("", None),
    ];
    for (tail, want) in cases {
        assert_eq!(total(tail), *want, "{tail}");
    }
    let anthropic = r#"{"usage":{"input_tokens":1,"cache_creation_input_tokens":2,"cache_read_input_tokens":3,"output_tokens":4}}"#;
    assert_eq!(
        usage_of(anthropic.as_bytes()),
        Some(Usage {
            prompt: 6,
            completion: 4,
            total: 10,
            cached: Some(3),
            reasoning: None
        })
    );
}

#[test]
fn body_usage_across_chunk_splits() {
    let body = br#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":3}}}"#;
    let want = usage_in_json(body);
    assert_eq!(want.map(|u| (u.total, u.cached)), Some((29, Some(3))));
    for at in 0..=body.len() {
        let mut b = BodyUsage::default();
        b.push(&body[..at]);
        b.push(&body[at..]);
        assert_eq!(b.finish(), want, "cut at {at}");
    }
    let mut b = BodyUsage::default();
    for byte in body.chunks(1) {
        b.push(byte);
    }
    assert_eq!(b.finish(), want);
    // finish resets it for another body.
    assert_eq!(b.finish(), None);
}

#[test]
fn body_usage_of_a_large_body_reads_its_ends() {
    let text = "y".repeat(MAX_JSON_BODY_BYTES);
    let at_end = format!(
        r#"{{"type":"message","content":[{{"type":"text","text":"{text}"}}],"usage":{{"input_tokens":7,"cache_read_input_tokens":3,"output_tokens":9}}}}"#
    );
    let at_start = format!(
        r#"{{"usage":{{"prompt_tokens":8,"total_tokens":8}},"data":[{{"embedding":"{text}"}}]}}"#
    );
    let cases = [
        (
            at_end,
            Usage {
                prompt: 10,
                completion: 9,
                total: 19,
                cached: Some(3),
                reasoning: None,
            },
        ),
        (
            at_start,
            Usage {
                prompt: 8,
                completion: 0,
                total: 8,
                cached: None,
                reasoning: None,
            },
        ),
    ];
    for (body, want) in &cases {
        for size in [body.len(), 100_000, 3000] {
            let mut b = BodyUsage::default();
            for chunk in body.as_bytes().chunks(size) {
                b.push(chunk);
                assert!(b.body.capacity() <= MAX_JSON_BODY_BYTES);
                assert!(b.head.len() <= END_BYTES && b.tail.len() <= END_BYTES);
            }
            assert_eq!(b.finish(), Some(*want), "chunks of {size}");
        }
    }
}

#[test]
fn body_usage_falls_back_to_a_lenient_scan() {
    // Not JSON (e.g. events the content type did not announce).
    let mut b = BodyUsage::default();
    b.push(openai_short("\n").bytes().as_slice());
    assert_eq!(b.finish().map(|u| u.total), Some(5));
}
