//! Identify the caller: the first stage of every request.
//!
//! Takes the request headers; gives the client's headers as they arrived, read with one host
//! call ([`ClientHeaders`]), and, with `clients`, the configured client that sends them (by
//! its verified identity header, else its key). The headers the router reads to route and
//! identify must be text ([`read_headers`]): a value it cannot read is refused, never
//! guessed. A request the router does not route keeps nothing of the client's key
//! ([`strip_client_credentials`]).

use crate::clients::{credential, AuthError, Client, CREDENTIAL_HEADERS};
use crate::config::plan::Plan;
use crate::errors::ApiError;
use crate::host::{header_value, HeaderPairs, Host};
use crate::metrics::Metrics;
use crate::pipeline::attempt;
use crate::rewrite::headers::{HeaderEdits, Side};

/// The client's request headers, read with one host call: single reads cost a call (and an
/// allocation in the VM) each, and removing a header the client never sent is a wasted call.
/// Values are the client's bytes; only the headers the router reads must be UTF-8
/// ([`ClientHeaders::require_text`]). When the map cannot be read, every lookup asks the host
/// and every header counts as present (so that removals still happen).
#[derive(Debug, Default)]
pub(crate) struct ClientHeaders(Option<HeaderPairs>);

impl ClientHeaders {
    pub(crate) fn read(host: &dyn Host) -> ClientHeaders {
        ClientHeaders(host.request_headers().ok())
    }

    /// The header's value, when the client sent it as UTF-8 (a value that is not reads as
    /// absent: see `require_text` for the headers where that must be refused).
    pub(crate) fn get(&self, host: &dyn Host, name: &str) -> Option<String> {
        match &self.0 {
            Some(headers) => header_value(headers, name).map(str::to_owned),
            None => host.request_header(name).ok().flatten(),
        }
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        match &self.0 {
            Some(headers) => headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)),
            None => true,
        }
    }

    /// A 400 naming the first of `names` that the client sent with a value that is not
    /// UTF-8: the router cannot read it, so it must not guess (a key, an identity, a header
    /// a rule matches).
    pub(crate) fn require_text<'n>(
        &self,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<(), ApiError> {
        let Some(headers) = &self.0 else {
            return Ok(());
        };
        for name in names {
            let odd = headers
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case(name) && std::str::from_utf8(v).is_err());
            if odd {
                return Err(ApiError::invalid_header(name));
            }
        }
        Ok(())
    }

    /// Makes `edits` on the request with one host call (none when nothing changes) and
    /// keeps the map as written.
    pub(crate) fn apply(
        &mut self,
        host: &mut dyn Host,
        edits: &HeaderEdits,
    ) -> Result<(), ApiError> {
        let written = edits
            .apply(host, Side::Request, self.0.as_ref())
            .map_err(|e| ApiError::internal(format!("could not edit the request headers: {e}")))?;
        if written.is_some() {
            self.0 = written;
        }
        Ok(())
    }
}

/// The client's headers, without those only the router's filters set: a client must never
/// pick the Envoy cluster itself, nor feed the failover hop.
pub(super) fn read_client_headers(host: &mut dyn Host, plan: &Plan) -> ClientHeaders {
    let mut client = ClientHeaders::read(host);
    let mut internal = HeaderEdits::default();
    internal.set(&plan.cluster_header, None);
    for name in attempt::INTERNAL_REQUEST_HEADERS {
        internal.set(name, None);
    }
    let _ = client.apply(host, &internal);
    client
}

/// The headers the router reads on every request: how it is routed, and, with
/// `clients`, who sends it. Their values must be UTF-8.
pub(super) fn read_headers(plan: &Plan) -> impl Iterator<Item = &str> {
    let clients = plan.clients.as_ref();
    let identity = clients.and_then(|c| c.identity_header.as_deref());
    let credentials = clients.map_or(&[][..], |_| &CREDENTIAL_HEADERS[..]);
    [":method", ":path"]
        .into_iter()
        .chain(credentials.iter().copied())
        .chain(identity)
}

/// Finds the request's client (its index in `clients`) by its verified identity header or
/// its key; an error when the configuration requires a known client and there is none.
pub(super) fn identify(
    plan: &Plan,
    client: &ClientHeaders,
    host: &dyn Host,
) -> Result<Option<usize>, AuthError> {
    let Some(clients) = &plan.clients else {
        return Ok(None);
    };
    let identity = clients
        .identity_header
        .as_deref()
        .and_then(|h| client.get(host, h));
    let credential = match identity {
        Some(_) => None,
        None => credential(|name| client.get(host, name)),
    };
    clients.identify(identity.as_deref(), credential.as_deref())
}

/// The configured client that sent the request.
pub(super) struct Caller<'f> {
    /// Its index in `clients`, for its stats.
    pub(super) index: usize,
    pub(super) client: &'f Client,
    pub(super) metrics: Option<&'f Metrics>,
}

impl<'f> Caller<'f> {
    /// The client at `index` of the plan's `clients`, if any.
    pub(super) fn of(
        plan: &'f Plan,
        index: Option<usize>,
        metrics: Option<&'f Metrics>,
    ) -> Option<Caller<'f>> {
        let index = index?;
        let client = plan.clients.as_ref()?.get(index)?;
        Some(Caller {
            index,
            client,
            metrics,
        })
    }
}

/// Removes the client's key and verified identity from the request.
pub(super) fn strip_client_credentials(
    plan: &Plan,
    client: &mut ClientHeaders,
    host: &mut dyn Host,
) -> Result<(), ApiError> {
    let mut edits = HeaderEdits::default();
    for name in CREDENTIAL_HEADERS {
        edits.set(name, None);
    }
    if let Some(h) = plan
        .clients
        .as_ref()
        .and_then(|c| c.identity_header.as_deref())
    {
        edits.set(h, None);
    }
    client.apply(host, &edits)
}
