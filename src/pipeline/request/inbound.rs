//! The answer on its way back: the response headers (who served, the translation back,
//! the diagnostic and rate-limit headers, whether the body is held for its cost), the body
//! as it passes (its usage read, a stream translated event by event or a whole answer at
//! its end), and the end of the stream (the caller's ledger settled or its usage reported
//! to the rate-limit service, the access-log line published).

use super::*;

impl RequestFlow {
    pub(super) fn answer_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Flow {
        if self.state != State::Routed {
            return Flow::Continue;
        }
        let now = now_ms(host);
        let upstream_headers = host.response_headers().unwrap_or_default();
        let plan = Rc::clone(&self.plan);
        // Every edit of the response headers, written with one host call.
        let mut edits = HeaderEdits::default();
        let served = answer::served(self.report.as_ref(), &mut edits, &upstream_headers);
        if let (Some(mixed), Some((key, _))) = (&self.mixed_failover, &served) {
            // A failover attempt in another API than the client's: its answer goes back.
            self.translation = mixed.served_by(&plan, key);
        }
        // The usage chunk the router asked for exists only in an OpenAI stream it passes on.
        let strip = self.strip_usage && self.translation.is_none();
        self.acc
            .on_response_map(host, &plan, &upstream_headers, 0, strip, now);
        if let (Some((key, _)), Some(r)) = (&served, &mut self.report) {
            if let Some(t) = r.served_by(&plan, key) {
                record::served_by(self.record.as_mut(), &r.upstream, &t.model);
            }
        }
        let attempts = served.as_ref().map_or(1, |(_, n)| *n);
        let ttfb_ms = now.saturating_sub(self.start_ms.unwrap_or(now));
        record::answered(self.record.as_mut(), attempts, ttfb_ms);
        if let (Some(meter), Some(m), Some((key, _)), Some(r)) =
            (&mut self.acc.meter, &self.metrics, &served, &self.report)
        {
            meter.reprice(m.scopes(key, &r.rule).rule_only());
        }
        let event_stream = is_event_stream(&upstream_headers);
        let translating = self.translation.is_some();
        if let Some(t) = &mut self.translation {
            t.streaming = event_stream;
        }
        if translating {
            // The body changes: its length is set again once it is whole (or dropped: a stream).
            edits.set("content-length", None);
        }
        if strip && event_stream {
            // Events are removed: the length the upstream announced would be wrong.
            edits.set("content-length", None);
        }
        if plan.response_headers {
            let attempts = served.as_ref().map(|(_, n)| *n);
            answer::stamp_diagnostics(&mut edits, self.report.as_ref(), attempts);
        }
        if let Some(quota) = &self.quota {
            answer::stamp_rate_limits(&mut edits, quota);
        }
        if let Err(e) = edits.apply(host, Side::Response, Some(&upstream_headers)) {
            log::warn!("llm-router: could not edit the response headers: {e}");
        }
        let priced = self.target_price().is_some();
        self.holding = answer::waits_for_cost(
            &plan,
            &upstream_headers,
            end_of_stream,
            event_stream,
            priced,
        ) || (translating && !event_stream && !end_of_stream);
        if self.holding {
            Flow::Pause
        } else {
            Flow::Continue
        }
    }

    /// A response body chunk passes (a stream is never held, only an incomplete event when
    /// the usage-only chunk is removed); its usage is read as it goes.
    pub(super) fn answer_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Flow {
        if self.holding {
            if !end_of_stream && !self.held.is_closed(host, body_size) {
                // Envoy keeps the body; the whole of it is read at the end.
                return Flow::Pause;
            }
            self.holding = false;
            let whole = match &self.translation {
                // One read, for the usage and the translation.
                Some(_) => translation::read_answer(host, body_size),
                None => None,
            };
            let _ = match &whole {
                Some(body) => self.acc.on_response_chunk(body, true),
                None => self.acc.on_response_body(host, body_size, true),
            };
            if let Some(cost) = self.cost() {
                let _ = host.set_response_header(HEADER_COST, Some(&answer::format_cost(cost)));
            }
            let now_s = self.start_ms.unwrap_or(0) / 1000;
            if let (Some(t), Some(body)) = (&self.translation, &whole) {
                let status = self.acc.status().unwrap_or(0);
                translation::whole_answer(host, t, status, body, now_s);
            }
            return Flow::Continue;
        }
        let now_s = self.start_ms.unwrap_or(0) / 1000;
        if let Some(t) = &mut self.translation {
            // One read of the chunk, for the usage and the translation (nothing is stripped
            // from a stream that is translated).
            if let Some(chunk) = translation::read_answer(host, body_size) {
                let _ = self.acc.on_response_chunk(&chunk, end_of_stream);
                translation::stream_chunk(host, t, &chunk, end_of_stream, now_s);
            }
            return Flow::Continue;
        }
        if let Edit::Replace(bytes) = self.acc.on_response_body(host, body_size, end_of_stream) {
            if let Err(e) = host.replace_response_body(body_size, &bytes) {
                log::warn!("llm-router: could not edit the response stream: {e}");
            }
        }
        Flow::Continue
    }

    pub(super) fn answer_trailers(&mut self, host: &mut dyn Host) -> Flow {
        if self.state != State::Routed {
            return Flow::Continue;
        }
        // Held, Envoy has buffered the whole body: read it now. Otherwise every chunk was
        // read as it passed, and the host's body buffer is no chunk of ours any more.
        let size = if self.holding { usize::MAX } else { 0 };
        self.answer_body(host, size, true)
    }

    /// The end of the stream (Envoy's access-log callback): finishes the tracked request
    /// and publishes its record.
    pub(super) fn finish(&mut self, host: &mut dyn Host) {
        // Passthrough requests end here with nothing to read (the floor of every request).
        if !self.acc.is_open() && self.record.is_none() {
            return;
        }
        // A reply of the router's own has its status; nothing was sent to learn about.
        let known = match self.state {
            State::Replied => self.record.as_ref().and_then(|r| r.status),
            _ => self.acc.completed(),
        };
        let end = StreamEnd::read(host, known);
        self.acc.finish(host, &self.plan, &end);
        if self.state == State::Routed {
            let plan = Rc::clone(&self.plan);
            if let Some(caller) = Caller::of(&plan, self.caller, self.metrics.as_deref()) {
                let (usage, price) = (self.acc.usage(), self.target_price());
                let charged = self.ledger_charged.take();
                admit::settle_caller(host, &caller, usage, price, charged, end.now_ms());
            }
            if let (Some(charged), Some(service)) = (
                self.service_charged.take(),
                plan.rate_limit_service.as_ref(),
            ) {
                let client = plan.clients.as_ref().and_then(|c| c.get(self.caller?));
                let (usage, price) = (self.acc.usage(), self.target_price());
                let done = service_admit::Done {
                    usage,
                    price,
                    now_ms: end.now_ms(),
                };
                let m = self.metrics.as_deref();
                service_admit::report(host, service, client, &charged, &done, m);
            }
        }
        self.publish_record(host, &end);
    }
}
