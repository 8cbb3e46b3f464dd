// Prometheus metrics at /metrics (prom-client): DNS queries, latency, truncations and
// per-account counts, the forwarder, the checker's transitions, the registry's sizes, and the
// process. DNS and forwarder figures are plain counters kept by those parts and read here at
// scrape time, so the query path pays nothing for them.
import client from 'prom-client';
import type { ForwarderStats } from '../dns/forward/stats.js';
import type { QueryCountsView } from '../dns/server/counters.js';
import type { RegistryCounts, RegistryStore } from '../registry/backend.js';
import type { FeedStatus } from '../registry/postgres/feed.js';
import type { RegistryChange } from '../registry/types.js';

export interface MetricsSources {
  registry: RegistryStore;
  dns?: QueryCountsView;
  forwarder?: { stats(): ForwarderStats };
  /** Run before each scrape: brings `dns` and `forwarder` up to date (asks the DNS workers). */
  refresh?: () => Promise<void>;
  /** privdns_build_info's labels: package.json's version and the node id (Config.nodeId). */
  build?: { version: string; node: string };
  /** How the DNS processes read and write UDP (dns.io decided): privdns_dns_io_info{mode}. */
  dnsIo?: string;
  /** The running configuration's hash and reloads. */
  config?: () => ConfigStatus;
  /** DNS worker processes (dns.workers > 1). */
  workers?: { replies(): { worker: number; replies: number }[]; restarts(): number };
  /** The change feed of a PostgreSQL registry. */
  cluster?: () => FeedStatus;
}

/** What /metrics says of the configuration (src/daemon.ts keeps it). */
export interface ConfigStatus {
  /** configHash() of the config running. */
  hash: string;
  /** Reloads since start, by result. */
  reloads: { ok: number; error: number };
  /** Unix ms of the last successful reload, or of the start. */
  lastReloadAt: number;
}

type Labels = Record<string, string | number>;
interface Sample {
  labels?: Labels;
  value: number;
  metricName?: string;
}

/** A metric whose samples are computed when scraped. */
function pulled(name: string, help: string, type: 'counter' | 'gauge' | 'histogram', samples: () => Sample[] | Promise<Sample[]>): client.Metric {
  const metric = {
    name,
    help,
    type,
    aggregator: 'sum',
    get: async () => ({ name, help, type, aggregator: 'sum', values: await samples() }),
    reset: () => undefined,
  };
  return metric as unknown as client.Metric;
}

function histogramSamples(name: string, buckets: number[], cumulative: number[], sum: number, count: number, labels: Labels = {}): Sample[] {
  return [
    ...buckets.map((le, i) => ({ metricName: `${name}_bucket`, labels: { ...labels, le }, value: cumulative[i] ?? 0 })),
    { metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: count },
    { metricName: `${name}_sum`, labels, value: sum },
    { metricName: `${name}_count`, labels, value: count },
  ];
}

export class Metrics {
  readonly register = new client.Registry();
  private readonly stopListening: () => void;
  private readonly refresh: (() => Promise<void>) | undefined;

  constructor(src: MetricsSources) {
    this.refresh = src.refresh;
    const reg = this.register;
    client.collectDefaultMetrics({ register: reg, prefix: 'privdns_' });

    const transitions = new client.Counter({
      name: 'privdns_instance_transitions_total',
      help: 'Instance state changes, by state before and after.',
      labelNames: ['from', 'to'],
      registers: [reg],
    });
    const onChange = (c: RegistryChange): void => {
      if (c.kind === 'instance' && c.op === 'put' && c.previousState !== null && c.previousState !== c.instance.state) {
        transitions.inc({ from: c.previousState, to: c.instance.state });
      }
    };
    src.registry.on('change', onChange);
    this.stopListening = () => src.registry.off('change', onChange);

    if (src.build) {
      new client.Gauge({
        name: 'privdns_build_info',
        help: 'Always 1: the privdns version running and the node it runs as.',
        labelNames: ['version', 'node'],
        registers: [reg],
      }).set(src.build, 1);
    }

    if (src.dnsIo !== undefined) {
      new client.Gauge({
        name: 'privdns_dns_io_info',
        help: 'Always 1: how every DNS process reads and writes UDP (dns.io with auto decided: batch or dgram).',
        labelNames: ['mode'],
        registers: [reg],
      }).set({ mode: src.dnsIo }, 1);
    }

    const cfg = src.config;
    if (cfg) {
      reg.registerMetric(pulled('privdns_config_info', 'Always 1: the hash of the configuration running (settings a reload kept count at their running value).', 'gauge', () => [
        { labels: { hash: cfg().hash }, value: 1 },
      ]));
      reg.registerMetric(pulled('privdns_config_reloads_total', 'Config reloads (SIGHUP, POST /v1/reload), by result: ok, or error (a bad file; the running config kept).', 'counter', () => [
        { labels: { result: 'ok' }, value: cfg().reloads.ok },
        { labels: { result: 'error' }, value: cfg().reloads.error },
      ]));
      reg.registerMetric(pulled('privdns_config_last_reload_timestamp_seconds', 'When the configuration running was loaded: the last successful reload, or the start.', 'gauge', () => [
        { value: cfg().lastReloadAt / 1000 },
      ]));
    }

    // Read from the database once per scrape; a database that cannot answer (PostgreSQL
    // away) leaves these out of the scrape rather than failing all of it.
    const counts = async (): Promise<RegistryCounts | null> => {
      try {
        return await src.registry.counts();
      } catch {
        return null;
      }
    };
    reg.registerMetric(pulled('privdns_registry_accounts', 'Accounts in the registry.', 'gauge', async () => {
      const c = await counts();
      return c ? [{ value: c.accounts }] : [];
    }));
    reg.registerMetric(pulled('privdns_registry_services', 'Services in the registry.', 'gauge', async () => {
      const c = await counts();
      return c ? [{ value: c.services }] : [];
    }));
    reg.registerMetric(
      pulled('privdns_registry_instances', 'Instances in the registry, by state (pending ones are the checks under way).', 'gauge', async () =>
        Object.entries((await counts())?.instances ?? {}).map(([state, value]) => ({ labels: { state }, value })),
      ),
    );
    reg.registerMetric(pulled('privdns_registry_revision', 'The registry revision: committed changes so far.', 'gauge', async () => {
      try {
        return [{ value: await src.registry.revision() }];
      } catch {
        return [];
      }
    }));

    const feed = src.cluster;
    if (feed) {
      reg.registerMetric(pulled('privdns_cluster_feed_connected', '1 while the change feed is connected to PostgreSQL.', 'gauge', () => [{ value: feed().connected ? 1 : 0 }]));
      reg.registerMetric(pulled('privdns_cluster_lag_revisions', 'Revisions committed in the database that this node has not applied yet.', 'gauge', () => {
        const f = feed();
        return [{ value: Math.max(0, f.latest - f.applied) }];
      }));
      reg.registerMetric(pulled('privdns_cluster_applied_revision', 'The registry revision this node has applied.', 'gauge', () => [{ value: feed().applied }]));
      reg.registerMetric(pulled('privdns_cluster_stale_seconds', 'Seconds since the change feed last heard from the database (0 while connected).', 'gauge', () => [{ value: feed().secondsStale }]));
      reg.registerMetric(pulled('privdns_cluster_resyncs_total', 'Full re-reads of the registry, by cause (gap: pruned history; epoch: another database; backwards).', 'counter', () =>
        Object.entries(feed().resyncs).map(([reason, value]) => ({ labels: { reason }, value }))));
    }

    const dns = src.dns;
    if (dns) {
      reg.registerMetric(
        pulled('privdns_dns_queries_total', 'DNS replies sent, by transport, rcode and query type.', 'counter', () =>
          dns.replyCounts().map(({ value, ...labels }) => ({ labels, value })),
        ),
      );
      reg.registerMetric(
        pulled('privdns_dns_dropped_total', 'DNS packets dropped unanswered (unreadable, or from UDP source port 0, which no reply can reach).', 'counter', () =>
          dns.droppedCounts().map(({ value, transport }) => ({ labels: { transport }, value })),
        ),
      );
      reg.registerMetric(
        pulled('privdns_dns_rate_limited_total', 'UDP queries held back by response rate limiting (dropped, or slipped as TC).', 'counter', () => [
          { value: dns.rateLimited() },
        ]),
      );
      reg.registerMetric(
        pulled('privdns_dns_truncated_total', 'DNS replies sent with TC set.', 'counter', () =>
          dns.truncatedCounts().map(({ value, transport }) => ({ labels: { transport }, value })),
        ),
      );
      reg.registerMetric(
        pulled('privdns_dns_query_duration_seconds', 'Time from a query arriving to its reply being sent.', 'histogram', () => {
          const h = dns.latencyHistogram();
          return histogramSamples('privdns_dns_query_duration_seconds', h.buckets, h.cumulative, h.sum, h.count);
        }),
      );
      reg.registerMetric(
        pulled('privdns_dns_account_queries_total', 'Queries from sources inside each account (at most 1000 accounts, the rest as _other).', 'counter', () =>
          dns.accountCounts().map(({ account, value }) => ({ labels: { account }, value })),
        ),
      );
    }

    const workers = src.workers;
    if (workers) {
      reg.registerMetric(
        pulled('privdns_dns_worker_replies_total', 'DNS replies sent by each worker process (by position; a replaced process adds to its position).', 'counter', () =>
          workers.replies().map(({ worker, replies }) => ({ labels: { worker }, value: replies })),
        ),
      );
      reg.registerMetric(pulled('privdns_dns_worker_restarts_total', 'DNS worker processes that exited and were started again.', 'counter', () => [{ value: workers.restarts() }]));
    }

    const fwd = src.forwarder;
    if (fwd) {
      const f = (name: string, help: string, pick: (s: ForwarderStats) => number): void =>
        reg.registerMetric(pulled(name, help, 'counter', () => [{ value: pick(fwd.stats()) }]));
      f('privdns_forward_queries_total', 'Queries for names outside the zone handed to the forwarder.', (s) => s.queries);
      f('privdns_forward_cache_hits_total', 'Forwarded queries answered from the cache.', (s) => s.cacheHits);
      f('privdns_forward_cache_misses_total', 'Forwarded queries not in the cache.', (s) => s.cacheMisses);
      f('privdns_forward_coalesced_total', 'Cache misses that joined an identical query in flight.', (s) => s.coalesced);
      f('privdns_forward_servfail_total', 'Forwarded queries answered SERVFAIL because no upstream answered in time.', (s) => s.servfails);
      f('privdns_forward_overloaded_total', 'Of those, queries refused upstream work: too many questions in flight, in all or for the asking account.', (s) => s.overloaded);
      f('privdns_forward_stale_answers_total', 'Forwarded queries answered from an expired cache entry (RFC 8767) because no upstream answered.', (s) => s.staleAnswers);
      reg.registerMetric(
        pulled('privdns_forward_cache_entries', 'Answers in the forwarder cache.', 'gauge', () => [{ value: fwd.stats().cache.entries }]),
      );
      reg.registerMetric(
        pulled('privdns_forward_upstream_latency_seconds', 'Latency of upstream exchanges that got an answer.', 'histogram', () => {
          const l = fwd.stats().upstreamLatency;
          return histogramSamples('privdns_forward_upstream_latency_seconds', l.buckets, l.counts, l.sumSeconds, l.count);
        }),
      );
      const perUpstream = (name: string, help: string, pick: 'queries' | 'failures' | 'timeouts' | 'dropped'): void =>
        reg.registerMetric(
          pulled(name, help, 'counter', () => fwd.stats().upstreams.map((u) => ({ labels: { upstream: u.address }, value: u[pick] }))),
        );
      perUpstream('privdns_forward_upstream_queries_total', 'Exchanges tried with each upstream.', 'queries');
      perUpstream('privdns_forward_upstream_failures_total', 'Failed exchanges with each upstream.', 'failures');
      perUpstream('privdns_forward_upstream_timeouts_total', 'Exchanges with each upstream that timed out.', 'timeouts');
      perUpstream('privdns_forward_upstream_dropped_total', 'Packets from each upstream dropped as not answering our question.', 'dropped');
      reg.registerMetric(
        pulled('privdns_forward_upstream_healthy', '1 while an upstream is considered healthy.', 'gauge', () =>
          fwd.stats().upstreams.map((u) => ({ labels: { upstream: u.address }, value: u.healthy ? 1 : 0 })),
        ),
      );
    }
  }

  async text(): Promise<string> {
    await this.refresh?.();
    return this.register.metrics();
  }

  get contentType(): string {
    return this.register.contentType;
  }

  close(): void {
    this.stopListening();
  }
}
