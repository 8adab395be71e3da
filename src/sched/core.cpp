// Core: submit, the dispatch loop, outcomes, retries, the breaker and the timeline.
#include "core.hpp"

#include <algorithm>
#include <boost/asio/append.hpp>
#include <boost/asio/post.hpp>
#include <cmath>
#include <limits>
#include <typeinfo>
#include <utility>

#include "admit/core/error.hpp"
#include "admit/sched/errors.hpp"

namespace admit::sched::detail {

namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

void bump(std::atomic<std::uint64_t>& c) { c.fetch_add(1, kRelaxed); }
void drop(std::atomic<std::uint64_t>& c) { c.fetch_sub(1, kRelaxed); }

DiscoveryOptions discovery_options(double ratio) {
  DiscoveryOptions o;
  o.buffer_ratio = ratio;
  return o;
}

void validate(const SchedulerOptions& o) {
  if (o.max_concurrent_executions < 1) {
    throw ValidationError("max_concurrent_executions", "0", "must be >= 1");
  }
  if (o.max_queue_size < 1) throw ValidationError("max_queue_size", "0", "must be >= 1");
  if (o.request_timeout < 0) {
    throw ValidationError("request_timeout", std::to_string(o.request_timeout), "must be >= 0");
  }
  if (!(o.rate_limit_buffer_ratio > 0 && o.rate_limit_buffer_ratio <= 1)) {
    throw ValidationError("rate_limit_buffer_ratio", std::to_string(o.rate_limit_buffer_ratio),
                          "must be in (0, 1]");
  }
  if (o.max_attempts < 1) {
    throw ValidationError("max_attempts", std::to_string(o.max_attempts), "must be >= 1");
  }
  for (const auto& [tenant, w] : o.tenant_weights) {
    if (!(w > 0) || !std::isfinite(w)) {
      throw ValidationError("tenant_weights[" + tenant + "]", std::to_string(w), "must be > 0");
    }
  }
  (void)CircuitBreaker(o.breaker);  // validates
}

std::vector<Limit> announced_limits(const DiscoveredBucket& b, double ratio) {
  // As Discovery learns a reported limit: a capacity of floor(limit * ratio) refilled at the
  // provider's full rate.
  auto one = [&](const char* name, std::int64_t v) {
    const auto cap = std::max<std::int64_t>(
        1, static_cast<std::int64_t>(std::floor(static_cast<double>(v) * ratio)));
    return Limit::custom(name, cap, v, std::chrono::microseconds(kMicrosPerMinute));
  };
  std::vector<Limit> out;
  if (b.rpm > 0) out.push_back(one("rpm", b.rpm));
  if (b.tpm > 0) out.push_back(one("tpm", b.tpm));
  return out;
}

}  // namespace

Core::Core(boost::asio::any_io_executor executor, Limiter& limiter, SchedulerOptions options,
           std::shared_ptr<ProviderPlugin> provider)
    : executor_(std::move(executor)),
      strand_(boost::asio::make_strand(executor_)),
      limiter_(limiter),
      clock_(limiter.clock()),
      options_((validate(options), std::move(options))),
      provider_(provider ? std::move(provider) : std::make_shared<HeaderProvider>()),
      plain_headers_(typeid(*provider_) == typeid(HeaderProvider)),
      backoff_(options_.backoff, options_.seed),
      // Enough finished nodes to serve every running request's successor and a burst of
      // submits from the pool; an idle scheduler holds at most this much beyond its queues.
      pool_(std::max<std::size_t>(1024, 2 * options_.max_concurrent_executions)) {
  if (options_.mode != Mode::basic) {
    discovery_ = std::make_unique<Discovery>(limiter_, Provider::generic,
                                             discovery_options(options_.rate_limit_buffer_ratio));
  }
  for (const auto& [tenant, w] : options_.tenant_weights) weights_[tenant] = w;
}

Core::~Core() {
  // Only reached when nothing refers to the core any more: no request is running or queued
  // with a pending post. Free what the containers still hold (the io_context was destroyed
  // with handlers pending, or close() never ran).
  ready_.clear();
  while (inbox_head_ != nullptr) {  // its drain was never run: submitted or running nodes
    pool_.destroy(std::exchange(inbox_head_, inbox_head_->inbox_next));
  }
  while (done_head_ != nullptr) {  // completions never run: their handlers are dropped
    pool_.destroy(std::exchange(done_head_, done_head_->inbox_next));
  }
  std::vector<RequestNode*> delayed;  // waiting to retry: in the timeline only
  for (Timed& t : timeline_) {
    if (t.kind == Timed::Kind::retry) delayed.push_back(static_cast<RequestNode*>(t.owner));
  }
  timeline_.clear();  // first: queued nodes' deadlines are in it too
  while (!fifo_.empty()) {
    RequestNode& r = *fifo_.begin();
    unqueue(r);
    pool_.destroy(&r);
  }
  for (RequestNode* r : delayed) pool_.destroy(r);
}

void Core::start_timer() { timer_ = AsioTimer::create(strand_, clock_); }

// ---- submit ----

void Core::submit(RequestMetadata&& meta, RequestFn&& fn, SubmitHandler&& done) {
  RequestNode* r = pool_.make(std::move(meta), std::move(fn), std::move(done));
  r->submitted_at = clock_.now();
  r->seq = next_seq_.fetch_add(1, kRelaxed);
  bump(n_.submitted);
  const bool bad_tokens = r->meta.estimated_tokens < 0;
  const bool bad_attempts = r->meta.max_attempts < 0;
  const bool no_model = r->meta.model.empty();
  const bool no_fn = !r->fn;
  Micros deadline = r->meta.deadline;
  if (options_.request_timeout > 0) {
    const Micros t = r->submitted_at + options_.request_timeout;
    deadline = deadline == 0 ? t : std::min(deadline, t);
  }
  r->deadline = deadline;
  r->cost = static_cast<double>(std::max<std::int64_t>(1, r->meta.estimated_tokens));
  if (bad_tokens || bad_attempts || no_model || no_fn) {
    r->error =
        bad_tokens
            ? std::make_exception_ptr(ValidationError(
                  "estimated_tokens", std::to_string(r->meta.estimated_tokens), "must be >= 0"))
        : bad_attempts ? std::make_exception_ptr(ValidationError(
                             "max_attempts", std::to_string(r->meta.max_attempts), "must be >= 0"))
        : no_model
            ? std::make_exception_ptr(ValidationError("model", "", "a request needs a model"))
            : std::make_exception_ptr(ValidationError("request_fn", "", "must not be empty"));
    bump(n_.failed);
    complete(r);
    return;
  }
  push_inbox(r, /*reply=*/false);
}

void Core::push_inbox(RequestNode* r, bool reply) {
  r->inbox_next = nullptr;
  r->inbox_reply = reply;
  bool post = false;
  {
    std::lock_guard g(inbox_mu_);
    (inbox_tail_ != nullptr ? inbox_tail_->inbox_next : inbox_head_) = r;
    inbox_tail_ = r;
    post = !std::exchange(drain_posted_, true);
  }
  if (post) boost::asio::post(strand_, [self = shared_from_this()] { self->drain(); });
}

void Core::complete(RequestNode* r) {
  if (!r->done.direct()) {
    std::exception_ptr e = std::move(r->error);
    Result res = e ? Result{} : std::move(r->result);
    boost::asio::post(executor_,
                      boost::asio::append(r->done.take_erased(), std::move(e), std::move(res)));
    pool_.destroy(r);
    return;
  }
  r->inbox_next = nullptr;
  bool post = false;
  {
    std::lock_guard g(done_mu_);
    (done_tail_ != nullptr ? done_tail_->inbox_next : done_head_) = r;
    done_tail_ = r;
    post = !std::exchange(completions_posted_, true);
  }
  if (post) {
    boost::asio::post(executor_, [self = shared_from_this()] { self->run_completions(); });
  }
}

void Core::run_completions() {
  RequestNode* batch = nullptr;
  {
    std::lock_guard g(done_mu_);
    batch = std::exchange(done_head_, nullptr);
    done_tail_ = nullptr;
    completions_posted_ = false;
  }
  // Each handler as if posted on its own: one that throws leaves run() with the exception,
  // and the rest of the batch waits for the next run (posted again, ahead of later ones).
  struct Rest {
    Core* core;
    RequestNode*& batch;
    ~Rest() {
      if (batch == nullptr) return;
      RequestNode* last = batch;
      while (last->inbox_next != nullptr) last = last->inbox_next;
      bool post = false;
      {
        std::lock_guard g(core->done_mu_);
        last->inbox_next = core->done_head_;
        if (core->done_head_ == nullptr) core->done_tail_ = last;
        core->done_head_ = batch;
        post = !std::exchange(core->completions_posted_, true);
      }
      if (post) {
        boost::asio::post(core->executor_,
                          [self = core->shared_from_this()] { self->run_completions(); });
      }
    }
  } rest{this, batch};
  while (batch != nullptr) {
    RequestNode* r = std::exchange(batch, batch->inbox_next);
    struct Free {
      NodePool& pool;
      RequestNode* r;
      ~Free() { pool.destroy(r); }
    } free{pool_, r};
    if (r->error) {
      r->done.invoke(std::move(r->error), Result{});
    } else {
      r->done.invoke(nullptr, std::move(r->result));
    }
  }
}

void Core::drain() {
  RequestNode* batch = nullptr;
  {
    std::lock_guard g(inbox_mu_);
    batch = std::exchange(inbox_head_, nullptr);
    inbox_tail_ = nullptr;
    drain_posted_ = false;  // what arrives from now on posts the next drain
  }
  // One at a time, as separate posts would have: each enqueue or reply pumps.
  while (batch != nullptr) {
    RequestNode* r = std::exchange(batch, batch->inbox_next);
    if (r->inbox_reply) {
      on_reply(*r);
    } else {
      enqueue(r);
    }
  }
}

BucketQueue& Core::queue_for(const RequestMetadata& meta) {
  std::string bucket = provider_->bucket_for(meta.model, meta.resource_type);
  std::string entity = options_.entity;
  std::string key;
  if (options_.mode == Mode::account) {
    entity = !meta.account.empty()  ? meta.account
             : !meta.tenant.empty() ? meta.tenant
                                    : options_.entity;
    key = entity + '/' + bucket;
  } else {
    key = bucket;
  }
  auto it = queues_.find(key);
  if (it != queues_.end()) return *it->second;
  auto q = std::make_unique<BucketQueue>(options_.breaker);
  q->key = key;
  q->bucket = std::move(bucket);
  q->entity = std::move(entity);
  q->unblock_ev.kind = Timed::Kind::unblock;
  q->unblock_ev.owner = q.get();
  if (options_.mode == Mode::account) {
    std::lock_guard g(announced_mu_);
    if (auto a = announced_.find(q->bucket); a != announced_.end()) {
      limiter_.set_discovered_limits(q->entity, q->bucket,
                                     announced_limits(a->second, options_.rate_limit_buffer_ratio));
    }
  }
  return *queues_.emplace(std::move(key), std::move(q)).first->second;
}

void Core::enqueue(RequestNode* p) {
  RequestNode& r = *p;
  if (closed_) {
    fail<SchedulerClosed>(r, n_.failed, r.meta.request_id, "scheduler closed");
    return;
  }
  BucketQueue& q = queue_for(r.meta);
  r.queue = &q;
  const Micros now = clock_.now();
  if (q.breaker.state(now) == BreakerState::open) {
    fail<TooManyFailedRequests>(r, n_.broken, r.meta.request_id, q.key, q.breaker.open_until());
    return;
  }
  if (r.deadline != 0 && r.deadline <= now) {
    fail<RequestTimeout>(
        r, n_.timed_out, r.meta.request_id,
        "request '" + printable(r.meta.request_id) + "' timed out before it queued");
    return;
  }
  if (fifo_.size() >= options_.max_queue_size) {
    if (options_.overflow == OverflowPolicy::reject) {
      fail<QueueOverflow>(r, n_.overflowed, r.meta.request_id,
                          "queue full (" + std::to_string(options_.max_queue_size) +
                              " requests): request '" + printable(r.meta.request_id) +
                              "' rejected");
      return;
    }
    RequestNode& oldest = *fifo_.begin();
    BucketQueue& oq = *oldest.queue;
    unqueue(oldest);
    fail<QueueOverflow>(oldest, n_.overflowed, oldest.meta.request_id,
                        "queue full (" + std::to_string(options_.max_queue_size) +
                            " requests): oldest request '" + printable(oldest.meta.request_id) +
                            "' dropped");
    make_ready(oq);
  }
  auto w = weights_.find(r.meta.tenant);
  Flow& f = q.fq.flow(r.meta.tenant, w == weights_.end() ? 1.0 : w->second);
  r.state = RequestNode::State::queued;
  q.fq.push(r, f);
  fifo_.insert(r);
  bump(n_.queued);
  if (r.deadline != 0) {
    r.deadline_ev.kind = Timed::Kind::deadline;
    r.deadline_ev.owner = &r;
    schedule(r.deadline_ev, r.deadline);
    rearm();
  }
  make_ready(q);
  pump();
}

// ---- dispatch ----

void Core::make_ready(BucketQueue& q) {
  if (q.ready_hook.is_linked() || q.acquiring || q.blocked_until != 0 || q.fq.empty()) return;
  ready_.push_back(q);
}

void Core::pump() {
  if (pumping_ || closed_) return;
  pumping_ = true;
  while (in_flight_ < options_.max_concurrent_executions && !ready_.empty()) {
    BucketQueue& q = ready_.front();
    ready_.pop_front();
    RequestNode* r = q.fq.head();
    if (r == nullptr || q.acquiring || q.blocked_until != 0) continue;
    const Micros now = clock_.now();
    if (!q.breaker.try_pass(now)) {
      // Open: nothing queued here can go for open_for; half-open with its probe out: the
      // probe's outcome makes the queue ready again.
      if (q.breaker.state(now) == BreakerState::open) fail_queue(q, now);
      continue;
    }
    dispatch(q, *r);
  }
  pumping_ = false;
}

void Core::dispatch(BucketQueue& q, RequestNode& r) {
  ++in_flight_;
  bump(n_.in_flight);
  if (options_.mode == Mode::basic) {
    q.fq.serve(r);
    fifo_.erase(fifo_.iterator_to(r));
    drop(n_.queued);
    make_ready(q);
    start(r, Lease{});
    return;
  }
  const Amounts& amounts = amounts_for(q, r);
  q.acquiring = true;
  q.acquiring_for = &r;
  r.state = RequestNode::State::acquiring;
  q.keepalive = shared_from_this();
  q.acq_handoff.store(0, kRelaxed);
  // The answer comes inside this call (MemoryStore, SqliteStore) or later on the store's
  // thread (RedisStore). Whoever comes second of "the call returned" and "the answer came"
  // runs on_acquired: inline on the strand, or posted to it (never on the store's thread,
  // where a lease's commit would wait for that very thread).
  Core* self = this;
  BucketQueue* qp = &q;
  limiter_.try_acquire_async(q.entity, q.bucket, amounts, [self, qp](Lease&& lease) {
    qp->acq_lease = std::move(lease);
    if (qp->acq_handoff.exchange(2) == 1) {
      boost::asio::post(self->strand_, [self, qp] { self->on_acquired(*qp); });
    }
  });
  if (q.acq_handoff.exchange(1) == 2) on_acquired(q);
}

void Core::on_acquired(BucketQueue& q) {
  const std::shared_ptr<void> keep = std::move(q.keepalive);  // the core lives to the end
  q.acquiring = false;
  Lease& lease = q.acq_lease;  // moved out if granted; a denial stays until the next acquire
  RequestNode* r = std::exchange(q.acquiring_for, nullptr);
  const Micros now = clock_.now();
  if (r == nullptr || closed_) {  // the request left while the acquire was out
    lease.rollback();
    --in_flight_;
    drop(n_.in_flight);
    q.breaker.release(now);
    make_ready(q);
    pump();
    return;
  }
  if (lease) {
    q.names_retried = false;
    q.fq.serve(*r);
    fifo_.erase(fifo_.iterator_to(*r));
    drop(n_.queued);
    make_ready(q);
    start(*r, std::move(lease));
    pump();
    return;
  }
  --in_flight_;
  drop(n_.in_flight);
  q.breaker.release(now);
  r->state = RequestNode::State::queued;
  const Decision& d = lease.decision();
  switch (d.code) {
    case Code::rate_exceeded:
    case Code::window_exceeded:
    case Code::concurrency_exceeded:
    case Code::queue_ahead:
      // The bucket is held: its head tries again at the exact instant the Limiter named
      // (a concurrency limit also when one of this queue's leases ends).
      bump(n_.throttled);
      block(q, now + std::max<Micros>(d.retry_after, 1), d.code == Code::concurrency_exceeded);
      break;
    case Code::unknown_limit:
      if (!q.names_retried) {  // limits changed under the cached names: look again, once
        q.names_retried = true;
        q.names_known = false;
        make_ready(q);
        break;
      }
      [[fallthrough]];
    default:
      unqueue(*r);
      fail<RequestRejected>(*r, n_.rejected, r->meta.request_id, d);
      make_ready(q);
      break;
  }
  pump();
}

const Amounts& Core::amounts_for(BucketQueue& q, const RequestNode& r) {
  // config_version() also reads what other processes learned when that is due, so a learned
  // limit first seen in the shared store is charged from this acquire on.
  const std::uint64_t version = limiter_.config_version();
  if (!q.names_known || version != q.names_version) {
    refresh_names(q);
    q.names_version = version;
    q.amounts_valid = false;
  }
  const std::int64_t tokens = r.meta.estimated_tokens;
  if (!q.amounts_valid) {
    Amounts a;
    for (const auto& n : q.request_names) a.add(n, 1);
    for (const auto& n : *q.token_names) a.add(n, tokens);
    q.amounts = std::move(a);
    q.amounts_tokens = tokens;
    q.amounts_valid = true;
  } else if (tokens != q.amounts_tokens) {
    // A token name listed twice holds twice the estimate; adding the difference per listing
    // keeps that, as a fresh build would.
    for (const auto& n : *q.token_names) q.amounts.add(n, tokens - q.amounts_tokens);
    q.amounts_tokens = tokens;
  }
  return q.amounts;
}

void Core::refresh_names(BucketQueue& q) {
  q.request_names.clear();
  auto tokens = std::make_shared<std::vector<std::string>>();
  try {
    for (const auto& [limit, source] : limiter_.resolve(q.entity, q.bucket)) {
      const std::string& n = limit.name();
      if (std::find(options_.request_limits.begin(), options_.request_limits.end(), n) !=
          options_.request_limits.end()) {
        q.request_names.push_back(n);
      } else if (std::find(options_.token_limits.begin(), options_.token_limits.end(), n) !=
                 options_.token_limits.end()) {
        tokens->push_back(n);
      }
    }
    q.names_known = true;
  } catch (const Error&) {
    // The store holds the configuration and cannot be read: acquire without amounts; the
    // acquire reports store_unavailable itself.
  }
  q.token_names = std::move(tokens);
}

void Core::start(RequestNode& r, Lease&& lease) {
  BucketQueue& q = *r.queue;
  const Micros now = clock_.now();
  r.state = RequestNode::State::running;
  r.lease = std::move(lease);
  r.token_names = q.token_names;
  ++q.running;
  q.running_tokens += r.meta.estimated_tokens;
  ++r.attempts;
  if (r.first_dispatch < 0) r.first_dispatch = now;
  bump(n_.dispatched);
  const Attempt attempt{&r.meta, q.bucket, r.attempts};
  r.reply_handoff.store(0, kRelaxed);
  // As with the acquire: a reply inside fn() is handled when fn() returns, a later one is
  // posted to the strand by deliver().
  try {
    r.fn(attempt, Reply(shared_from_this(), &r));
  } catch (...) {
    r.result.outcome = Outcome{};
    r.result.outcome.error = std::current_exception();
    r.reply_handoff.store(2);
  }
  if (r.reply_handoff.exchange(1) == 2) on_reply(r);
}

void Core::deliver(void* request, Outcome outcome) {
  auto* r = static_cast<RequestNode*>(request);
  r->result.outcome = std::move(outcome);
  if (r->reply_handoff.exchange(2) == 1) push_inbox(r, /*reply=*/true);
}

// ---- outcomes ----

void Core::feed(BucketQueue& q, RequestNode& r, const Observation& obs, bool server_error) {
  if (!r.lease.active()) return;
  const Outcome& o = r.result.outcome;
  try {
    if (server_error) (void)r.lease.mark_failure();  // observe() would mark a success
    ObserveResult seen;
    if (o.status > 0 && discovery_) {
      seen = discovery_->observe(r.lease, obs);
      if (seen.limits_changed) q.names_known = false;
    }
    if (o.status == 429) {
      r.lease.rollback();  // a 429 is not charged by the provider
      return;
    }
    if (reconcile(q, r, seen)) unblock(q);  // refunded to follow the provider: try again
    r.lease.commit();
  } catch (const Error&) {
    // A limit renamed since the acquire (ValidationError) or an ended lease: the usage
    // stands as reserved.
    r.lease.commit();
  }
}

bool Core::reconcile(BucketQueue& q, RequestNode& r, const ObserveResult& seen) {
  const Outcome& o = r.result.outcome;
  const std::int64_t estimate = r.meta.estimated_tokens;
  const bool tokens = r.token_names && !r.token_names->empty();
  auto follows = [&](std::string_view name) {
    return std::find_if(seen.headroom.begin(), seen.headroom.end(),
                        [&](const Headroom& h) { return h.limit == name; });
  };
  Amounts d;
  // The usage reported. A learned limit whose remaining this answer reported mirrors the
  // provider, which charged the estimate (prompt + max_tokens) when the request arrived and
  // gives nothing back for a shorter answer (OpenAI, the simulator): it keeps the estimate
  // (more usage is charged). The others (configured limits) take the usage as reported.
  std::int64_t delta = 0;
  if (o.usage && tokens) {
    delta = o.usage->total() - estimate;
    for (const auto& n : *r.token_names) {
      const std::int64_t dn =
          follows(n) != seen.headroom.end() ? std::max<std::int64_t>(delta, 0) : delta;
      if (dn != 0) d.add(n, dn);
    }
  }
  // The provider's level above what the local bucket shows (another client spent less than
  // assumed, the limit rose, a margin of old): refund up to this lease's charge, less what
  // this queue has in flight (charged here, and perhaps not yet by the provider when it
  // wrote remaining), so the bucket follows the provider up as well as down.
  bool raised = false;
  for (const Headroom& h : seen.headroom) {
    std::int64_t held = 0;
    std::int64_t pending = 0;
    if (tokens &&
        std::find(r.token_names->begin(), r.token_names->end(), h.limit) != r.token_names->end()) {
      held = estimate + std::max<std::int64_t>(delta, 0);
      pending = q.running_tokens;
    } else if (std::find(q.request_names.begin(), q.request_names.end(), h.limit) !=
               q.request_names.end()) {
      held = 1;
      pending = q.running;
    }
    const std::int64_t give = std::min(held, h.room - pending);
    if (give > 0) {
      d.add(h.limit, -give);
      raised = true;
    }
  }
  if (!d.empty()) (void)r.lease.adjust(d);
  return raised;
}

void Core::on_reply(RequestNode& r) {
  BucketQueue& q = *r.queue;
  const Micros now = clock_.now();
  --in_flight_;
  drop(n_.in_flight);
  --q.running;
  q.running_tokens -= r.meta.estimated_tokens;
  Outcome& o = r.result.outcome;
  const bool transport = o.error != nullptr;
  const bool limited = !transport && o.status == 429;
  const bool server_error = transport || o.status >= 500;
  Observation obs;
  const bool nothing_to_parse = plain_headers_ && o.status < 400 && o.headers.empty();
  if (!transport && o.status > 0 && !nothing_to_parse) {
    obs = provider_->parse_response(o.status, o.headers, o.body, now);
  }
  if (limited) obs.rate_limited = true;
  feed(q, r, obs, server_error);
  if (q.blocked_on_slots) unblock(q);

  const BreakerState before = q.breaker.state(now);
  bool tripped = false;
  if (server_error) {
    tripped = q.breaker.on_failure(now);
  } else {
    q.breaker.on_success(now);
  }
  if (q.breaker.state(now) != before) mirror_breaker(q, now);
  if (tripped) {
    bump(n_.breaker_trips);
    fail_queue(q, now);
  }

  if (r.abandoned) {  // timed out while running: accounted above, nobody waits for it
    pool_.destroy(&r);
    make_ready(q);
    pump();
    return;
  }
  r.state = RequestNode::State::replied;  // no longer running: finish() frees it
  if (limited || server_error) {
    const int cap = r.meta.max_attempts > 0 ? std::min(r.meta.max_attempts, options_.max_attempts)
                                            : options_.max_attempts;
    if (r.attempts >= cap) {
      if (transport) {
        const std::exception_ptr e = o.error;
        bump(n_.failed);
        finish(r, e);
      } else {
        fail<RetriesExhausted>(r, n_.failed, r.meta.request_id, o.status, r.attempts);
      }
    } else if (q.breaker.state(now) == BreakerState::open) {
      fail<TooManyFailedRequests>(r, n_.broken, r.meta.request_id, q.key, q.breaker.open_until());
    } else {
      const Micros when = now + backoff_.delay(r.attempts, obs.retry_after);
      if (r.deadline != 0 && when >= r.deadline) {
        timeout(r);
      } else {
        r.state = RequestNode::State::delayed;
        bump(n_.retried);
        bump(n_.delayed);
        r.retry_ev.kind = Timed::Kind::retry;
        r.retry_ev.owner = &r;
        schedule(r.retry_ev, when);
        rearm();
      }
    }
  } else {
    Result& res = r.result;  // its outcome is the reply
    res.attempts = r.attempts;
    res.queued_for = r.first_dispatch - r.submitted_at;
    res.completed_at = now;
    res.bucket = q.bucket;
    bump(n_.completed);
    finish(r, nullptr);
  }
  make_ready(q);
  pump();
}

void Core::retry_due(RequestNode& r) {
  BucketQueue& q = *r.queue;
  drop(n_.delayed);
  if (closed_) {
    fail<SchedulerClosed>(r, n_.failed, r.meta.request_id, "scheduler closed");
    return;
  }
  if (q.breaker.state(clock_.now()) == BreakerState::open) {
    fail<TooManyFailedRequests>(r, n_.broken, r.meta.request_id, q.key, q.breaker.open_until());
    return;
  }
  // Back into its flow with its original sequence number: ahead of what came after it.
  r.state = RequestNode::State::queued;
  q.fq.push(r, *r.flow);
  fifo_.insert(r);
  bump(n_.queued);
  make_ready(q);
}

// ---- leaving ----

template <class E, class... Args>
void Core::fail(RequestNode& r, std::atomic<std::uint64_t>& counter, Args&&... args) {
  bump(counter);
  if (&counter != &n_.failed) bump(n_.failed);
  finish(r, std::make_exception_ptr(E(std::forward<Args>(args)...)));
}

void Core::finish(RequestNode& r, std::exception_ptr error) {
  unschedule(r.deadline_ev);
  unschedule(r.retry_ev);
  const bool running = r.state == RequestNode::State::running;
  r.state = RequestNode::State::done;
  if (running) {
    // on_reply frees it; its handler leaves it now (a timeout: never with a result).
    r.abandoned = true;
    boost::asio::post(executor_,
                      boost::asio::append(r.done.take_erased(), std::move(error), Result{}));
    return;
  }
  r.error = std::move(error);
  complete(&r);
}

void Core::unqueue(RequestNode& r) {
  BucketQueue& q = *r.queue;
  q.fq.remove(r);
  fifo_.erase(fifo_.iterator_to(r));
  drop(n_.queued);
  if (q.acquiring_for == &r) q.acquiring_for = nullptr;
}

void Core::fail_queue(BucketQueue& q, Micros now) {
  (void)now;
  while (RequestNode* r = q.fq.head()) {
    unqueue(*r);
    fail<TooManyFailedRequests>(*r, n_.broken, r->meta.request_id, q.key, q.breaker.open_until());
  }
}

void Core::timeout(RequestNode& r) {
  BucketQueue& q = *r.queue;
  if (r.state == RequestNode::State::queued || r.state == RequestNode::State::acquiring) {
    unqueue(r);
    make_ready(q);
  } else if (r.state == RequestNode::State::delayed) {
    drop(n_.delayed);
  }
  fail<RequestTimeout>(r, n_.timed_out, r.meta.request_id,
                       "request '" + printable(r.meta.request_id) + "' timed out");
}

// ---- time ----

void Core::block(BucketQueue& q, Micros until, bool on_slots) {
  q.blocked_until = until;
  q.blocked_on_slots = on_slots;
  mirror_hold(q);
  if (q.ready_hook.is_linked()) ready_.erase(ready_.iterator_to(q));
  schedule(q.unblock_ev, until);
  rearm();
}

void Core::unblock(BucketQueue& q) {
  const bool held = q.blocked_until != 0;
  q.blocked_until = 0;
  q.blocked_on_slots = false;
  if (held) mirror_hold(q);
  unschedule(q.unblock_ev);
  make_ready(q);
}

void Core::schedule(Timed& t, Micros when) {
  unschedule(t);
  t.when = when;
  timeline_.insert(t);
}

void Core::unschedule(Timed& t) {
  if (t.hook.is_linked()) timeline_.erase(timeline_.iterator_to(t));
}

void Core::rearm() {
  if (!timer_) return;
  if (timeline_.empty()) {
    if (armed_) timer_->cancel();
    armed_ = false;
    return;
  }
  const Micros next = timeline_.begin()->when;
  if (armed_ && armed_at_ == next) return;
  armed_ = true;
  armed_at_ = next;
  timer_->arm(next, [w = weak_from_this()] {
    if (auto self = w.lock()) self->on_timer();
  });
}

void Core::on_timer() {
  armed_ = false;
  const Micros now = clock_.now();
  while (!timeline_.empty() && timeline_.begin()->when <= now) {
    Timed& t = *timeline_.begin();
    timeline_.erase(timeline_.iterator_to(t));
    switch (t.kind) {
      case Timed::Kind::deadline: {
        auto& r = *static_cast<RequestNode*>(t.owner);
        if (r.state != RequestNode::State::done) timeout(r);
        break;
      }
      case Timed::Kind::retry:
        retry_due(*static_cast<RequestNode*>(t.owner));
        break;
      case Timed::Kind::unblock:
        unblock(*static_cast<BucketQueue*>(t.owner));
        break;
    }
  }
  rearm();
  pump();
}

// ---- other threads ----

void Core::close() {
  boost::asio::post(strand_, [self = shared_from_this()] {
    self->closed_ = true;
    while (!self->fifo_.empty()) {
      RequestNode& r = *self->fifo_.begin();
      self->unqueue(r);
      self->fail<SchedulerClosed>(r, self->n_.failed, r.meta.request_id, "scheduler closed");
    }
    std::vector<RequestNode*> delayed;
    for (Timed& t : self->timeline_) {
      if (t.kind == Timed::Kind::retry) delayed.push_back(static_cast<RequestNode*>(t.owner));
    }
    for (RequestNode* r : delayed) {
      drop(self->n_.delayed);
      self->fail<SchedulerClosed>(*r, self->n_.failed, r->meta.request_id, "scheduler closed");
    }
    self->timeline_.clear();
    self->ready_.clear();
    self->rearm();
  });
}

std::size_t Core::discover_limits() {
  const std::vector<DiscoveredBucket> found = provider_->discover_limits();
  std::size_t applied = 0;
  for (const auto& b : found) {
    std::vector<Limit> limits = announced_limits(b, options_.rate_limit_buffer_ratio);
    if (limits.empty()) continue;
    ++applied;
    if (options_.mode == Mode::account) {
      std::lock_guard g(announced_mu_);
      announced_[b.bucket] = b;
    } else {
      limiter_.set_discovered_limits(options_.entity, b.bucket, std::move(limits));
    }
  }
  // The queues' cached limit names may have changed; account queues that exist take the
  // announced limits now.
  boost::asio::post(strand_, [self = shared_from_this()] {
    for (auto& [key, q] : self->queues_) {
      q->names_known = false;
      if (self->options_.mode != Mode::account) continue;
      std::lock_guard g(self->announced_mu_);
      if (auto a = self->announced_.find(q->bucket); a != self->announced_.end()) {
        self->limiter_.set_discovered_limits(
            q->entity, q->bucket,
            announced_limits(a->second, self->options_.rate_limit_buffer_ratio));
      }
    }
  });
  return applied;
}

void Core::set_weight(std::string tenant, double weight) {
  if (!(weight > 0) || !std::isfinite(weight)) {
    throw ValidationError("tenant weight", std::to_string(weight), "must be > 0");
  }
  boost::asio::post(strand_, [self = shared_from_this(), t = std::move(tenant), weight]() mutable {
    self->weights_[std::move(t)] = weight;
  });
}

void Core::mirror_breaker(const BucketQueue& q, Micros now) {
  std::lock_guard g(breaker_mu_);
  auto& b = breakers_[q.key];
  b.queue = q.key;
  b.state = q.breaker.state(now);
  b.open_until = q.breaker.open_until();
}

SchedulerStats Core::stats() const {
  SchedulerStats s;
  s.queued = n_.queued.load(kRelaxed);
  s.in_flight = n_.in_flight.load(kRelaxed);
  s.delayed = n_.delayed.load(kRelaxed);
  s.live = pool_.live();
  s.submitted = n_.submitted.load(kRelaxed);
  s.dispatched = n_.dispatched.load(kRelaxed);
  s.completed = n_.completed.load(kRelaxed);
  s.failed = n_.failed.load(kRelaxed);
  s.retried = n_.retried.load(kRelaxed);
  s.overflowed = n_.overflowed.load(kRelaxed);
  s.timed_out = n_.timed_out.load(kRelaxed);
  s.broken = n_.broken.load(kRelaxed);
  s.rejected = n_.rejected.load(kRelaxed);
  s.throttled = n_.throttled.load(kRelaxed);
  s.breaker_trips = n_.breaker_trips.load(kRelaxed);
  for (const auto& b : breakers()) {
    if (b.state != BreakerState::closed) ++s.breakers_open;
  }
  return s;
}

std::vector<BucketBreaker> Core::breakers() const {
  const Micros now = clock_.now();
  std::vector<BucketBreaker> out;
  std::lock_guard g(breaker_mu_);
  for (const auto& [key, b] : breakers_) {
    BucketBreaker c = b;
    if (c.state == BreakerState::open && now >= c.open_until) c.state = BreakerState::half_open;
    out.push_back(std::move(c));
  }
  return out;
}

void Core::mirror_hold(const BucketQueue& q) {
  std::lock_guard g(held_mu_);
  const auto it = held_.find(q.key);
  if (it != held_.end()) {
    it->second = q.blocked_until;
  } else if (q.blocked_until != 0) {
    held_.emplace(q.key, q.blocked_until);
  }
}

Micros Core::held_until(std::string_view queue) const {
  std::lock_guard g(held_mu_);
  const auto it = held_.find(queue);
  return it == held_.end() ? 0 : it->second;
}

BreakerState Core::breaker_state(std::string_view queue) const {
  for (const auto& b : breakers()) {
    if (b.queue == queue) return b.state;
  }
  return BreakerState::closed;
}

}  // namespace admit::sched::detail
