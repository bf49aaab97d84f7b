//! An in-memory `Host` for native tests of the request flow.

use std::collections::HashMap;

use super::{GrpcCall, HeaderPairs, Host, HostError, HostResult, MetricKind};

#[derive(Debug, Default, Clone, PartialEq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct MockHost {
    pub request_headers: Vec<(String, String)>,
    /// Request headers whose values are raw bytes (maybe not UTF-8), after `request_headers`.
    pub raw_request_headers: HeaderPairs,
    pub request_body: Vec<u8>,
    pub response_headers: Vec<(String, String)>,
    /// Response headers whose values are raw bytes, after `response_headers`.
    pub raw_response_headers: HeaderPairs,
    /// The current response body chunk.
    pub response_body: Vec<u8>,
    pub shared: HashMap<String, (Vec<u8>, u32)>,
    pub local_reply: Option<LocalReply>,
    /// Fixed clock.
    pub now_nanos: u64,
    /// Simulates other workers: this many upcoming CAS writes find the value bumped by one.
    pub cas_conflicts: usize,
    /// Once set, header edits fail as they do in Envoy after the headers went upstream.
    pub headers_sent: bool,
    /// Stream properties by path joined with `.` (e.g. `response.code`).
    pub properties: HashMap<String, Vec<u8>>,
    /// Makes every shared-data call fail (a host without shared data).
    pub shared_data_fails: bool,
    /// Defined metrics: kind and name; the id is the index.
    pub metrics: Vec<(MetricKind, String)>,
    /// Counter and gauge values by metric id.
    pub metric_values: HashMap<u32, i64>,
    /// Histogram samples by metric id.
    pub metric_samples: HashMap<u32, Vec<u64>>,
    /// Makes every metric call fail.
    pub metrics_fail: bool,
    /// Makes `define_metric` fail for names containing this.
    pub refuse_metrics_containing: Option<String>,
    /// Filter state the flow published, by name (without Envoy's `wasm.` prefix).
    pub filter_state: HashMap<String, Vec<u8>>,
    /// gRPC calls started, in order (the token is the index + 1).
    pub grpc_calls: Vec<SentGrpcCall>,
    /// Makes `grpc_call` fail (as for an unknown cluster).
    pub grpc_fails: bool,
    /// The message of the gRPC answer being delivered.
    pub grpc_answer: Option<Vec<u8>>,
    /// How many times the paused request was resumed.
    pub resumed: usize,
}

/// A gRPC call as the mock host received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentGrpcCall {
    pub upstream: Vec<u8>,
    pub service: String,
    pub method: String,
    pub message: Vec<u8>,
    pub timeout_ms: u32,
}

impl MockHost {
    pub fn with_request(headers: &[(&str, &str)], body: &[u8]) -> MockHost {
        MockHost {
            request_headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
                .collect(),
            request_body: body.to_vec(),
            ..MockHost::default()
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.request_headers, name)
    }

    pub fn response_header(&self, name: &str) -> Option<&str> {
        find(&self.response_headers, name)
    }

    /// The id of a defined metric by name.
    pub fn metric_id(&self, name: &str) -> Option<u32> {
        self.metrics
            .iter()
            .position(|(_, n)| n == name)
            .and_then(|i| u32::try_from(i).ok())
    }

    /// A counter's or gauge's value by name (0 when defined but never changed; `None` when
    /// not defined).
    pub fn metric(&self, name: &str) -> Option<i64> {
        let id = self.metric_id(name)?;
        Some(self.metric_values.get(&id).copied().unwrap_or(0))
    }

    /// A histogram's samples by name.
    pub fn samples(&self, name: &str) -> Vec<u64> {
        self.metric_id(name)
            .and_then(|id| self.metric_samples.get(&id).cloned())
            .unwrap_or_default()
    }

    /// Sets an integer property as Envoy encodes it (8 bytes, little endian).
    pub fn set_int_property(&mut self, path: &str, value: i64) {
        self.properties
            .insert(path.to_owned(), value.to_le_bytes().to_vec());
    }
}

/// Text headers and raw ones as one map, as the host hands it over.
fn pairs(text: &[(String, String)], raw: &[(String, Vec<u8>)]) -> HeaderPairs {
    text.iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone().into_bytes()))
        .chain(raw.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())))
        .collect()
}

/// A single header read as the host does: text, or an error when it is not UTF-8.
fn single(
    text: &[(String, String)],
    raw: &[(String, Vec<u8>)],
    name: &str,
) -> HostResult<Option<String>> {
    if let Some(v) = find(text, name) {
        return Ok(Some(v.to_owned()));
    }
    match super::header_bytes(raw, name) {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| HostError::Status(format!("header {name}: not UTF-8"))),
    }
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Splits a whole header map into the text and raw lists.
fn split(headers: &HeaderPairs) -> (Vec<(String, String)>, HeaderPairs) {
    let mut text = Vec::new();
    let mut raw = Vec::new();
    for (k, v) in headers {
        match std::str::from_utf8(v) {
            Ok(t) => text.push((k.clone(), t.to_owned())),
            Err(_) => raw.push((k.clone(), v.clone())),
        }
    }
    (text, raw)
}

fn set(headers: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    if let Some(v) = value {
        headers.push((name.to_owned(), v.to_owned()));
    }
}

impl Host for MockHost {
    fn request_header(&self, name: &str) -> HostResult<Option<String>> {
        single(&self.request_headers, &self.raw_request_headers, name)
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) -> HostResult<()> {
        if self.headers_sent {
            return Err(HostError::Status("headers already sent".to_owned()));
        }
        self.raw_request_headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        set(&mut self.request_headers, name, value);
        Ok(())
    }

    fn set_request_headers(&mut self, headers: &HeaderPairs) -> HostResult<()> {
        if self.headers_sent {
            return Err(HostError::Status("headers already sent".to_owned()));
        }
        (self.request_headers, self.raw_request_headers) = split(headers);
        Ok(())
    }

    fn set_response_headers(&mut self, headers: &HeaderPairs) -> HostResult<()> {
        (self.response_headers, self.raw_response_headers) = split(headers);
        Ok(())
    }

    fn request_body(&self, len: usize) -> HostResult<Option<Vec<u8>>> {
        let len = len.min(self.request_body.len());
        Ok(self.request_body.get(..len).map(<[u8]>::to_vec))
    }

    fn replace_request_body(&mut self, _current_len: usize, body: &[u8]) -> HostResult<()> {
        self.request_body = body.to_vec();
        Ok(())
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) -> HostResult<()> {
        self.raw_response_headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        set(&mut self.response_headers, name, value);
        Ok(())
    }

    fn response_header(&self, name: &str) -> HostResult<Option<String>> {
        single(&self.response_headers, &self.raw_response_headers, name)
    }

    fn request_headers(&self) -> HostResult<HeaderPairs> {
        Ok(pairs(&self.request_headers, &self.raw_request_headers))
    }

    fn response_headers(&self) -> HostResult<HeaderPairs> {
        Ok(pairs(&self.response_headers, &self.raw_response_headers))
    }

    fn response_body(&self, len: usize) -> HostResult<Option<Vec<u8>>> {
        self.response_body_range(0, len)
    }

    fn response_body_range(&self, start: usize, len: usize) -> HostResult<Option<Vec<u8>>> {
        let end = start.saturating_add(len).min(self.response_body.len());
        Ok(self
            .response_body
            .get(start.min(end)..end)
            .map(<[u8]>::to_vec))
    }

    fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>> {
        Ok(self.properties.get(&path.join(".")).cloned())
    }

    fn set_property(&mut self, name: &str, value: &[u8]) -> HostResult<()> {
        self.filter_state.insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    fn replace_response_body(&mut self, current_len: usize, body: &[u8]) -> HostResult<()> {
        let end = current_len.min(self.response_body.len());
        self.response_body.splice(..end, body.iter().copied());
        Ok(())
    }

    fn shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        if self.shared_data_fails {
            return Err(HostError::Status("get_shared_data: NotFound".to_owned()));
        }
        Ok(match self.shared.get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set_shared_data(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> HostResult<()> {
        if self.shared_data_fails {
            return Err(HostError::Status(
                "set_shared_data: InternalFailure".to_owned(),
            ));
        }
        if self.cas_conflicts > 0 {
            self.cas_conflicts -= 1;
            // Another worker got there first: bump the stored counter and the token.
            let entry = self.shared.entry(key.to_owned()).or_insert((vec![0; 8], 0));
            let n = <[u8; 8]>::try_from(entry.0.as_slice())
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            entry.0 = (n + 1).to_le_bytes().to_vec();
            entry.1 += 1;
            return Err(HostError::CasMismatch);
        }
        let current = self.shared.get(key).map(|(_, c)| *c);
        if cas.is_some() && cas != current {
            return Err(HostError::CasMismatch);
        }
        let next = current.map_or(1, |c| c + 1);
        self.shared.insert(key.to_owned(), (value.to_vec(), next));
        Ok(())
    }

    fn send_local_reply(
        &mut self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HostResult<()> {
        self.local_reply = Some(LocalReply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_vec(),
        });
        Ok(())
    }

    fn now_nanos(&self) -> u64 {
        self.now_nanos
    }

    fn grpc_call(&mut self, call: &GrpcCall) -> HostResult<u32> {
        if self.grpc_fails {
            return Err(HostError::Status("grpc_call: ParseFailure".to_owned()));
        }
        self.grpc_calls.push(SentGrpcCall {
            upstream: call.upstream.to_vec(),
            service: call.service.to_owned(),
            method: call.method.to_owned(),
            message: call.message.to_vec(),
            timeout_ms: call.timeout_ms,
        });
        Ok(u32::try_from(self.grpc_calls.len()).unwrap_or(u32::MAX))
    }

    fn grpc_response(&self, size: usize) -> HostResult<Option<Vec<u8>>> {
        Ok(self
            .grpc_answer
            .as_ref()
            .map(|m| m[..size.min(m.len())].to_vec()))
    }

    fn resume_request(&mut self) -> HostResult<()> {
        self.resumed += 1;
        Ok(())
    }

    fn define_metric(&mut self, kind: MetricKind, name: &str) -> HostResult<u32> {
        let refused = self
            .refuse_metrics_containing
            .as_deref()
            .is_some_and(|part| name.contains(part));
        if self.metrics_fail || refused {
            return Err(HostError::Status(
                "define_metric: InternalFailure".to_owned(),
            ));
        }
        let id = u32::try_from(self.metrics.len())
            .map_err(|_| HostError::Status("define_metric: too many".to_owned()))?;
        self.metrics.push((kind, name.to_owned()));
        Ok(id)
    }

    fn increment_metric(&mut self, id: u32, offset: i64) -> HostResult<()> {
        // As Envoy: counters only go up; histograms take no increments.
        match self.metrics.get(id as usize) {
            None => Err(HostError::Status("increment_metric: NotFound".to_owned())),
            Some((MetricKind::Histogram, _)) => Err(HostError::Status(
                "increment_metric: BadArgument".to_owned(),
            )),
            Some((MetricKind::Counter, _)) if offset <= 0 => Err(HostError::Status(
                "increment_metric: BadArgument".to_owned(),
            )),
            Some(_) if self.metrics_fail => Err(HostError::Status(
                "increment_metric: InternalFailure".to_owned(),
            )),
            Some(_) => {
                *self.metric_values.entry(id).or_insert(0) += offset;
                Ok(())
            }
        }
    }

    fn record_metric(&mut self, id: u32, value: u64) -> HostResult<()> {
        // As Envoy: a histogram takes a sample, a gauge is set, a counter is added to.
        let value_i64 = i64::try_from(value).unwrap_or(i64::MAX);
        match self.metrics.get(id as usize) {
            None => Err(HostError::Status("record_metric: NotFound".to_owned())),
            Some(_) if self.metrics_fail => Err(HostError::Status(
                "record_metric: InternalFailure".to_owned(),
            )),
            Some((MetricKind::Histogram, _)) => {
                self.metric_samples.entry(id).or_default().push(value);
                Ok(())
            }
            Some((MetricKind::Gauge, _)) => {
                self.metric_values.insert(id, value_i64);
                Ok(())
            }
            Some((MetricKind::Counter, _)) => {
                *self.metric_values.entry(id).or_insert(0) += value_i64;
                Ok(())
            }
        }
    }
}
