//! The counter and fault methods both fake handles share, written once.

/// Adds the counter, fault, rate-limit and latency methods to a fake's handle. The handle must
/// have a method `pipeline(&self) -> &Pipeline<$endpoint>`.
macro_rules! pipeline_methods {
    ($endpoint:ty) => {
        /// Request counters since start or the last `reset_stats` (helpers are not counted).
        pub fn stats(&self) -> $crate::sandbox::Stats<$endpoint> {
            self.pipeline().stats()
        }

        /// Every request since start or the last `reset_stats`, in order of arrival.
        pub fn request_log(&self) -> Vec<$crate::sandbox::RequestRecord<$endpoint>> {
            self.pipeline().request_log()
        }

        /// Zeroes the counters and empties the request log.
        pub fn reset_stats(&self) {
            self.pipeline().reset_stats()
        }

        /// Injects a fault; it stays until removed.
        pub fn inject(&self, fault: $crate::sandbox::Fault<$endpoint>) -> $crate::sandbox::FaultId {
            self.pipeline().inject(fault)
        }

        /// Removes one injected fault; `false` if it was not there.
        pub fn remove_fault(&self, id: $crate::sandbox::FaultId) -> bool {
            self.pipeline().remove(id)
        }

        /// Rate-limits the requests on `target` (replacing any limit on the same target).
        pub fn set_rate_limit(
            &self,
            target: impl Into<$crate::sandbox::Target<$endpoint>>,
            limit: $crate::sandbox::RateLimit,
        ) {
            self.pipeline().set_rate_limit(target.into(), limit)
        }

        /// Removes every rate limit.
        pub fn clear_rate_limits(&self) {
            self.pipeline().clear_rate_limits()
        }

        /// Delays every request on `target` by `latency` before it is handled (zero removes it;
        /// when several targets match, the longest latency applies).
        pub fn set_latency(
            &self,
            target: impl Into<$crate::sandbox::Target<$endpoint>>,
            latency: std::time::Duration,
        ) {
            self.pipeline().set_latency(target.into(), latency)
        }

        /// Removes every added latency.
        pub fn clear_latency(&self) {
            self.pipeline().clear_latency()
        }

        /// The number of customer writes (creates, updates, deletes) stored through the API so
        /// far, as a watch a test can await. It ticks as soon as a write is stored, before its
        /// answer is sent.
        pub fn writes_applied(&self) -> tokio::sync::watch::Receiver<u64> {
            self.pipeline().writes()
        }

        /// The number of requests recorded in the request log so far (counting from start;
        /// `reset_stats` does not reset it), as a watch a test can await. A request is recorded
        /// once its answer is decided.
        pub fn requests_seen(&self) -> tokio::sync::watch::Receiver<u64> {
            self.pipeline().requests()
        }

        /// Waits until at least `k` customer writes have been stored through the API (counting
        /// from start; `reset_stats` does not reset it). With a `FaultAction::ApplyThenHang`
        /// on the k-th write, the client can be stopped after the write and before its answer.
        pub async fn wait_for_writes(&self, k: u64) {
            let mut writes = self.pipeline().writes();
            // The sender lives as long as this handle, so the wait cannot end early.
            let _ = writes.wait_for(|n| *n >= k).await;
        }
    };
}

pub(crate) use pipeline_methods;
