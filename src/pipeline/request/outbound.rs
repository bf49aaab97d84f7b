//! The routed request on its way out: [`Outbound`] is what routing prepared, sent at once
//! or, with a rate-limit service, once the service's answers admit it (`service_admit`).

use super::*;

/// A routed request ready to be sent on: what [`RequestFlow::send`] writes and counts.
pub(super) struct Outbound {
    pub(super) report: Report,
    pub(super) edits: HeaderEdits,
    pub(super) new_body: Option<Vec<u8>>,
    pub(super) body_size: usize,
    pub(super) decision: Decision,
    pub(super) chosen: Candidate,
    /// Candidates health admission passed over (`None`: through the failover cluster).
    pub(super) passed_over: Option<usize>,
    pub(super) estimate: u64,
    pub(super) now: u64,
    /// The rate-limit service's calls still to make (none: embedded limits).
    pub(super) checks: Vec<Check>,
}

impl RequestFlow {
    /// An answer of the rate-limit service: once all are in, the request goes or is refused.
    pub(super) fn service_answer(
        &mut self,
        host: &mut dyn Host,
        token: u32,
        status: u32,
        size: usize,
    ) {
        let Some((waiting, _)) = self.waiting.as_mut() else {
            return;
        };
        let Some(verdict) = waiting.answer(host, token, status, size) else {
            return;
        };
        let Some((waiting, out)) = self.waiting.take() else {
            return;
        };
        waiting.count(self.metrics.as_deref());
        if let Some(m) = &self.metrics {
            let now = now_ms(host);
            let started = waiting.started_ms();
            m.limits_service.latency(host, now.saturating_sub(started));
        }
        self.admitted(host, &verdict, out, true);
    }

    /// Sends the prepared request on: its headers and body written, counted from now on.
    pub(super) fn send(&mut self, host: &mut dyn Host, out: Outbound) -> Result<(), Refusal> {
        let new_body = out.new_body.as_deref();
        rewrite::send(host, &mut self.client, &out.edits, out.body_size, new_body)?;
        if let Some(m) = &self.metrics {
            if let Some(i) = self.caller {
                m.clients.add(i, ClientStat::Requests, 1);
            }
            let (d, chosen, estimate) = (&out.decision, &out.chosen, out.estimate);
            let meter = admit::start_meter(host, m, d, chosen, out.passed_over, estimate, out.now);
            self.acc.meter = Some(meter);
        }
        self.report = Some(out.report);
        self.state = State::Routed;
        Ok(())
    }

    /// Answers the client with a refusal's error and headers.
    pub(super) fn refuse(&mut self, host: &mut dyn Host, refusal: Refusal) -> Flow {
        let (error, headers) = refusal.into_reply(host);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.reply_with(host, &error, &headers)
    }

    /// Sends the prepared request on (`resume`: it was paused for the rate-limit service).
    pub(super) fn go(&mut self, host: &mut dyn Host, out: Outbound, resume: bool) -> Flow {
        if let Err(refusal) = self.send(host, out) {
            return self.refuse(host, refusal);
        }
        if !resume {
            return Flow::Continue;
        }
        if let Err(e) = host.resume_request() {
            log::error!("llm-router: could not resume the request: {e}");
        }
        Flow::Pause
    }

    /// The rate-limit service's verdict on the prepared request.
    pub(super) fn admitted(
        &mut self,
        host: &mut dyn Host,
        verdict: &Verdict,
        out: Outbound,
        resume: bool,
    ) -> Flow {
        let Some(service) = self.plan.rate_limit_service.as_ref() else {
            return self.go(host, out, resume);
        };
        let client = self.caller();
        let metrics = self.metrics.as_deref();
        match service_admit::decide(verdict, service, client, metrics, out.now) {
            Ok(charged) => {
                self.quota = service_admit::quota(verdict);
                if !charged {
                    // Nothing was counted: the report at the end carries all the usage.
                    if let Some(c) = &mut self.service_charged {
                        c.tokens = 0;
                        c.cost_micro = 0;
                    }
                }
                self.go(host, out, resume)
            }
            Err(refusal) => {
                self.service_charged = None;
                if let (Some(m), Some(i), true) = (
                    &self.metrics,
                    self.caller,
                    service_admit::is_clients(verdict),
                ) {
                    m.clients.add(i, ClientStat::RateLimited, 1);
                }
                self.refuse(host, refusal)
            }
        }
    }
}
